"""Datasets: synthetic shapes, real MNIST from ../shared/data, class subsets and validation splits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from advx.data import load_dataset
from advx.errors import DataError
from advx.schema import DatasetConfig

CPU = torch.device("cpu")
MNIST_DIR = Path(os.environ.get("ADVX_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_mnist = pytest.mark.skipif(not (MNIST_DIR / "MNIST" / "raw").is_dir(), reason=f"MNIST not in {MNIST_DIR}")


@pytest.mark.parametrize(("shape", "dims"), [("mnist", (1, 28, 28)), ("cifar", (3, 32, 32))])
def test_synthetic_has_the_requested_shape(shape, dims):
    data = load_dataset(DatasetConfig(name="synthetic", shape=shape, train_size=100, test_size=50, val_size=20), CPU)
    assert data.input_shape == dims
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 50)
    x, y = next(data.train.batches(16, torch.Generator().manual_seed(0)))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and y.shape == (16,)


@needs_mnist
def test_real_mnist_loads_as_device_tensors():
    data = load_dataset(DatasetConfig(name="mnist", data_dir=str(MNIST_DIR), val_size=10000), CPU)
    assert (len(data.train), len(data.val), len(data.test)) == (50000, 10000, 10000)
    assert data.train.images.dtype == torch.uint8 and data.input_shape == (1, 28, 28)
    assert abs(data.mean[0] - 0.1307) < 0.002  # the published MNIST training mean


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
