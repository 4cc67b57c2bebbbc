"""Datasets: synthetic shapes, real MNIST and Fashion-MNIST from ../shared/data, class subsets and validation splits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from advx.data import load_dataset
from advx.errors import ConfigError, DataError
from advx.runtime import held_out_generator, seed_everything
from advx.schema import (
    AttackConfig,
    AttackTaskConfig,
    ConstructTaskConfig,
    DatasetConfig,
    RegimeConfig,
    ReproduceTaskConfig,
    TrainTaskConfig,
)

CPU = torch.device("cpu")
MNIST_DIR = Path(os.environ.get("ADVX_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_mnist = pytest.mark.skipif(not (MNIST_DIR / "MNIST" / "raw").is_dir(), reason=f"MNIST not in {MNIST_DIR}")


@pytest.mark.parametrize(("shape", "dims"), [("mnist", (1, 28, 28)), ("cifar", (3, 32, 32))])
def test_synthetic_has_the_requested_shape(shape, dims):
    data = load_dataset(DatasetConfig(name="synthetic", shape=shape, train_size=100, test_size=50, val_size=20), CPU)
    assert data.input_shape == dims
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 50)
    batches = list(data.train.batches(16, torch.Generator().manual_seed(0)))
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (16, *dims) and y.shape == (16,)
    assert [len(b[1]) for b in batches] == [16] * 5  # every example once, in a shuffled order
    seen = torch.cat([b[0] for b in batches]).flatten(1).sum(1)
    assert torch.equal(seen.sort().values, data.train.images.flatten(1).float().div(255).sum(1).sort().values)
    assert not torch.equal(torch.cat([b[1] for b in batches]), data.train.labels)


@needs_mnist
def test_real_mnist_loads_as_device_tensors():
    data = load_dataset(DatasetConfig(name="mnist", data_dir=str(MNIST_DIR), val_size=10000), CPU)
    assert (len(data.train), len(data.val), len(data.test)) == (50000, 10000, 10000)
    assert data.train.images.dtype == torch.uint8 and data.input_shape == (1, 28, 28)
    assert abs(data.mean[0] - 0.1307) < 0.002  # the published MNIST training mean


@pytest.mark.skipif(not (MNIST_DIR / "FashionMNIST" / "raw").is_dir(), reason=f"Fashion-MNIST not in {MNIST_DIR}")
def test_real_fashion_mnist_loads_with_its_readme_split():
    data = load_dataset(DatasetConfig(name="fashion_mnist", data_dir=str(MNIST_DIR)), CPU)
    assert (len(data.train), len(data.test), data.num_classes) == (60000, 10000, 10)
    assert data.input_shape == (1, 28, 28) and data.train.images.dtype == torch.uint8
    assert abs(data.mean[0] - 0.2860) < 0.002  # the published training mean (../shared/data/README.md)
    assert torch.bincount(data.test.labels).tolist() == [1000] * 10  # the README's re-split: 1000 per class


@needs_mnist
def test_mnist_3_vs_7_keeps_two_relabelled_classes():
    data = load_dataset(DatasetConfig(name="mnist", data_dir=str(MNIST_DIR), classes=[3, 7]), CPU)
    assert data.num_classes == 2
    assert set(data.test.labels.tolist()) == {0, 1}
    assert len(data.test) == 1010 + 1028  # test counts of 3s and 7s


def test_validation_split_must_leave_training_data():
    with pytest.raises(DataError, match="leaves no training data"):
        load_dataset(DatasetConfig(name="synthetic", train_size=50, val_size=50), CPU)


def test_gcn_zca_whitens_the_training_split():
    """Goodfellow 2015's CIFAR-10 space: float inputs whose training covariance has eigenvalues
    lambda / (lambda + bias) <= 1, and the test split goes through the same map."""
    data = load_dataset(DatasetConfig(name="synthetic", shape="cifar", train_size=300, test_size=40,
                                      preprocess="gcn_zca"), CPU)
    assert data.train.images.dtype == torch.float32 and data.input_shape == (3, 32, 32)
    flat = data.train.images.flatten(1).double()
    covariance = (flat - flat.mean(0)).T @ (flat - flat.mean(0)) / len(flat)
    eigenvalues = torch.linalg.eigvalsh(covariance)
    assert eigenvalues.max() <= 1 + 1e-3 and eigenvalues.max() > 0.5
    x, _ = data.test.batch(torch.arange(4))
    assert x.dtype == torch.float32 and (x.min() < 0 or x.max() > 1)  # no [0, 1] box in this space
    assert not data.boxed and not data.train.boxed  # so attacks and regimes may not clip


def test_augment_shifts_and_flips_without_changing_pixels():
    from advx.data import augment

    x = torch.rand(16, 3, 8, 8)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(augment(x, "none", 4, generator), x)
    assert torch.equal(augment(x, "crop", 0, generator), x)  # no padding: nothing to shift
    flipped = augment(x, "crop_flip", 0, generator)
    kept = [torch.equal(a, b) for a, b in zip(flipped, x, strict=True)]
    mirrored = [torch.equal(a, b.flip(-1)) for a, b in zip(flipped, x, strict=True)]
    assert all(k or m for k, m in zip(kept, mirrored, strict=True)) and any(mirrored) and any(kept)
    shifted = augment(x, "crop", 2, generator)
    assert shifted.shape == x.shape
    for a, b in zip(shifted, x, strict=True):  # each output is x moved by at most 2 pixels, zero filled
        assert any(torch.equal(a, torch.nn.functional.pad(b, (2, 2, 2, 2))[:, 2 + dy:10 + dy, 2 + dx:10 + dx])
                   for dy in range(-2, 3) for dx in range(-2, 3))


@pytest.mark.parametrize("seed", [0, 1, 1234, 2**31 - 1])
def test_no_run_seed_trains_on_the_spheres_held_out_sets(seed):
    """The spheres' test and validation sets come from a seed no run can use: a run's training stream (its
    seed_everything generator) never replays them, whatever its seed (1234 used to replay the test set)."""
    data = load_dataset(DatasetConfig(name="spheres", dim=5, test_size=64, val_size=32, train_size=64), CPU)
    assert not data.boxed and not data.test.boxed and not data.train.boxed
    x, _ = next(data.train.batches(64, seed_everything(seed)))
    for held_out in (data.test.images, data.val.images):
        assert not torch.isclose(x[:, None], held_out[None]).all(-1).any()  # no training point is a held-out one


def test_held_out_generators_differ_from_every_run_generator():
    held_out = torch.rand(8, generator=held_out_generator(5))
    assert torch.equal(held_out, torch.rand(8, generator=held_out_generator(5)))  # reproducible
    for run_seed in (0, 5, 2**31 - 1):
        assert not torch.equal(held_out, torch.rand(8, generator=seed_everything(run_seed)))
    with pytest.raises(ValueError, match="held-out stream"):
        held_out_generator(2**31)


@pytest.mark.parametrize("seed", [-1, 2**31])
@pytest.mark.parametrize("schema", [TrainTaskConfig, AttackTaskConfig, ConstructTaskConfig, ReproduceTaskConfig])
def test_run_seeds_outside_0_to_2_pow_31_are_refused(schema, seed):
    with pytest.raises(ConfigError, match=r"^seed must be in \[0, 2\*\*31\), got -?\d+$"):
        schema(seed=seed)
    if schema is not ReproduceTaskConfig:  # (which also needs a paper)
        schema(seed=2**31 - 1)  # the largest run seed is fine


def test_a_seed_out_of_range_fails_on_the_command_line(advx):
    result = advx("train", "seed=-1", "dataset=synthetic", "runtime=cpu")
    assert result.exit_code == 2
    assert "seed must be in [0, 2**31), got -1" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(("dataset", "group"), [
    (DatasetConfig(name="spheres"), "regime"), (DatasetConfig(name="spheres"), "attack"),
    (DatasetConfig(name="synthetic", preprocess="gcn_zca"), "regime"),
    (DatasetConfig(name="synthetic", preprocess="gcn_zca"), "attack"),
])
def test_clipping_data_without_a_box_is_refused_by_the_schema(dataset, group):
    clipped = {"regime": RegimeConfig(name="pgd_adv"), "attack": AttackConfig(name="pgd")}  # PGD clips by default
    unclipped = {"regime": RegimeConfig(name="standard"), "attack": AttackConfig(name="none")}
    message = f"^{group}.clip=true clips to the \\[0, 1\\] box, but .* set {group}.clip=false$"
    with pytest.raises(ConfigError, match=message):
        TrainTaskConfig(dataset=dataset, **{**unclipped, group: clipped[group]})
    TrainTaskConfig(dataset=dataset, **unclipped)
    TrainTaskConfig(dataset=DatasetConfig(name="synthetic"), **clipped)  # pixels in [0, 1]: clipping is fine
