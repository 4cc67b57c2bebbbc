"""`advx construct` and `dataset=derived`: derived datasets are built in resumable chunks, stored as float tensors,
reload to the same numbers, train like any dataset; the authors' released format loads too."""

from __future__ import annotations

import json

import pytest
import torch

from advx import derived as derived_files
from advx.construct import construct, make_plan
from advx.data import Split, synthetic
from advx.models import build_model
from advx.progress import Bars
from advx.runtime import Runtime
from advx.schema import ConstructConfig
from conftest import TINY, metrics, record_saves, unwrapped

CNN = ["model=cnn", "model.channels=[8,16]", "model.hidden=32"]
CONSTRUCT = ["runtime=cpu", "runtime.progress=false", "construct.num_examples=96", "construct.chunk_size=24"]
RELABEL = [*CONSTRUCT, "construct.eps=2.0", "construct.steps=15", "construct.step_size=0.4"]


@pytest.fixture
def source(advx, workdir):
    """A small CNN trained for 3 epochs on the synthetic dataset (a 'standard' source model)."""
    run_dir = workdir / "source"
    result = advx("train", *TINY, *CNN, "train.epochs=3", f"hydra.run.dir={run_dir}")
    assert result.exit_code == 0, result.output
    return run_dir


def dataset_file(run_dir):
    return torch.load(run_dir / derived_files.DATA_FILE, weights_only=True)


def test_construct_killed_halfway_continues_where_it_stopped(advx, workdir, source, monkeypatch):
    straight = workdir / "straight"
    assert advx("construct", "ddet", f"source={source}", *RELABEL, f"hydra.run.dir={straight}").exit_code == 0

    killed = workdir / "killed"
    record_saves(monkeypatch, derived_files, die_after=2)  # killed while the third of four chunks is being saved
    result = advx("construct", "ddet", f"source={source}", *RELABEL, f"hydra.run.dir={killed}")
    assert result.exit_code == 130
    assert unwrapped(f"advx construct resume={killed}") in unwrapped(result.stderr)
    assert sorted(p.name for p in (killed / "chunks").iterdir()) == ["00000.pt", "00001.pt"]
    assert not (killed / "dataset.pt").exists() and not (killed / "metrics.json").exists()

    saved = record_saves(monkeypatch, derived_files)
    result = advx("construct", f"resume={killed}")
    assert result.exit_code == 0, result.output
    chunks_built = [p for p in saved if p.parent.name == "chunks"]
    assert [p.name for p in chunks_built] == ["00002.pt", "00003.pt"]  # the saved chunks were not redone
    assert not (killed / "chunks").exists()
    for key in ("images", "labels"):
        assert torch.equal(dataset_file(killed)[key], dataset_file(straight)[key])
    assert metrics(killed)["targeted_success_rate"] == metrics(straight)["targeted_success_rate"]

    saved.clear()
    assert advx("construct", f"resume={killed}").exit_code == 0  # resuming a finished construction is a no-op
    assert saved == []


def test_a_reloaded_dataset_scores_the_targeted_success_rate_it_was_built_with(advx, workdir, source):
    built = workdir / "drand"
    result = advx("construct", "drand", f"source={source}", *RELABEL, f"hydra.run.dir={built}")
    assert result.exit_code == 0, result.output
    stored = dataset_file(built)
    assert stored["images"].dtype == torch.float32 and stored["images"].shape == (96, 1, 28, 28)
    assert 0 <= float(stored["images"].min()) and float(stored["images"].max()) <= 1
    meta = json.loads((built / "derived.json").read_text())
    assert meta["kind"] == "drand" and meta["source"] == str(source.resolve())
    assert meta["parameters"]["eps"] == 2.0 and meta["source_dataset"]["name"] == "synthetic"
    success = metrics(built)["targeted_success_rate"]
    assert success > 0.5  # the attack works on this source

    scored = workdir / "rescored"
    result = advx("attack", f"run={source}", f"derived={built}", "split=train", "attack=none", "runtime=cpu",
                  "runtime.progress=false", f"hydra.run.dir={scored}")
    assert result.exit_code == 0, result.output
    assert 1 - metrics(scored)["clean_error"] == pytest.approx(success, abs=1e-6)

    trained = workdir / "on_drand"
    result = advx("train", *CNN, "dataset=derived", f"dataset.path={built}", "train.epochs=2", "train.augment=crop",
                  "train.crop_padding=2", "runtime=cpu", "runtime.progress=false", f"hydra.run.dir={trained}")
    assert result.exit_code == 0, result.output
    assert unwrapped("on derived (96 train / 128 test)") in unwrapped(result.stderr)  # D_rand, scored on clean test
    assert len((trained / "metrics.csv").read_text().splitlines()) == 1 + 2  # header + 2 epochs


def test_the_leakage_control_moves_each_image_by_its_target_class_pattern(advx, workdir, source):
    """dnoise: D_det's labels (y + 1) mod C, each image moved by one fixed pattern per target class, of L2 norm
    eps before clipping to the box; the same seed gives the same patterns."""
    built = workdir / "dnoise"
    result = advx("construct", "dnoise", f"source={source}", *CONSTRUCT, "construct.eps=2.0", f"hydra.run.dir={built}")
    assert result.exit_code == 0, result.output
    stored = dataset_file(built)
    train, _ = synthetic("mnist", 10, 256, 128)
    x, y = train[0][:96].float() / 255, train[1][:96]
    assert torch.equal(stored["labels"], (y + 1) % 10)
    moved = stored["images"] - x
    assert float(moved.flatten(1).norm(dim=1).max()) <= 2.0 + 1e-4  # clipping only shortens the move
    for t in range(10):  # one pattern per target class: unclipped pixels move alike within a class
        rows = moved[stored["labels"] == t].flatten(1)
        inside = ((x[stored["labels"] == t].flatten(1) + rows) > 0.01) & ((x[stored["labels"] == t].flatten(1)
                                                                           + rows) < 0.99)
        both = inside[0] & inside[1]
        assert torch.allclose(rows[0][both], rows[1][both], atol=1e-5)
    cfg = ConstructConfig(kind="dnoise", eps=2.0)
    first, second = (make_plan(cfg, y, 10, seed=0, image_shape=(1, 28, 28)) for _ in range(2))
    assert torch.equal(first.patterns, second.patterns)
    assert torch.allclose(first.patterns.flatten(1).norm(dim=1), torch.ones(10))
    assert 0 <= metrics(built)["targeted_success_rate"] <= 1  # how often the source already predicts t


def test_inversion_moves_the_start_image_towards_the_target_representation(advx, workdir, source):
    out = workdir / "nonrobust"
    result = advx("construct", "nonrobust", f"source={source}", *CONSTRUCT, "construct.steps=30",
                  f"hydra.run.dir={out}")
    assert result.exit_code == 0, result.output
    assert unwrapped("regime=standard") in unwrapped(result.stderr)
    assert metrics(out)["relative_distance"] < 0.5
    (_, original_labels), _ = synthetic("mnist", 10, 256, 128)  # the source's training set (TINY)
    assert torch.equal(dataset_file(out)["labels"], original_labels[:96])  # inversion keeps the labels
    robust_warning = advx("construct", "robust", f"source={source}", *CONSTRUCT, "construct.steps=2",
                          f"hydra.run.dir={workdir / 'robust'}")
    assert robust_warning.exit_code == 0
    assert unwrapped("the paper builds D_R from an adversarially trained model") in unwrapped(robust_warning.stderr)


@pytest.mark.parametrize("kind", ["nonrobust", "ddet"])
def test_constructions_run_in_fp32_whatever_the_runtime_precision(tmp_path, kind):
    """Inversion and relabelling are precision-sensitive: a bf16 runtime builds exactly the fp32 dataset."""
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 3, [0.5], [0.25], channels=[4, 8], hidden=16).eval()
    generator = torch.Generator().manual_seed(0)
    train = Split(torch.randint(0, 256, (12, 1, 8, 8), generator=generator, dtype=torch.uint8), torch.arange(12) % 3)
    cfg = ConstructConfig(kind=kind, steps=5, step_size=0.2, eps=1.0, chunk_size=6)
    plan = make_plan(cfg, train.labels, 3, seed=0)
    chunks = {precision: construct(model, train, plan, cfg, Runtime(torch.device("cpu"), precision, False, False),
                                   tmp_path / precision, Bars(enabled=False)) for precision in ("fp32", "bf16")}
    for fp32, bf16 in zip(chunks["fp32"], chunks["bf16"], strict=True):
        assert fp32.keys() == bf16.keys()
        for key in fp32:
            assert fp32[key].dtype == bf16[key].dtype and torch.equal(fp32[key], bf16[key]), key


def write_released(folder, images, labels):
    folder.mkdir()
    torch.save(images, folder / derived_files.RELEASED_IMAGES)
    torch.save(labels, folder / derived_files.RELEASED_LABELS)


def test_the_authors_released_format_trains(advx, workdir):
    released = workdir / "d_robust_released"
    generator = torch.Generator().manual_seed(0)
    batches = [torch.rand(40, 1, 28, 28, generator=generator) for _ in range(3)]  # a list of batch tensors
    labels = [torch.tensor(i % 10) for i in range(120)]  # a list of per-example label tensors
    write_released(released, batches, labels)
    run_dir = workdir / "on_released"
    result = advx("train", "model=softmax", "dataset=derived", f"dataset.path={released}", "dataset.base=synthetic",
                  "train.epochs=1", "runtime=cpu", "runtime.progress=false", f"hydra.run.dir={run_dir}")
    assert result.exit_code == 0, result.output
    assert unwrapped("120 train / 256 test") in unwrapped(result.stderr)

    wrong_shape = workdir / "cifar_shaped"
    write_released(wrong_shape, torch.rand(8, 3, 32, 32), torch.zeros(8, dtype=torch.long))
    result = advx("train", "model=softmax", "dataset=derived", f"dataset.path={wrong_shape}",
                  "dataset.base=synthetic", "runtime=cpu")
    assert result.exit_code == 2
    assert "does not match synthetic's test split" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["construct"], "name what to construct"),
    (["construct", "robust"], "missing a value for 'source'"),
    (["construct", "sideways", "source=x"], "unknown construct option 'sideways'"),
    (["construct", "drand", "source=nowhere"], "run dir nowhere does not exist"),
    (["construct", "drand", "source=x", "construct.steps=0"], "construct.steps must be >= 1"),
    (["train", "dataset=derived"], "dataset=derived needs dataset.path="),
    (["train", "dataset=derived", "dataset.path=nowhere"], "derived dataset nowhere does not exist"),
])
def test_construct_and_derived_data_errors_are_one_line(advx, args, message):
    result = advx(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_an_unfinished_construction_is_named_when_trained_on(advx, workdir):
    unfinished = workdir / "unfinished"
    (unfinished / "chunks").mkdir(parents=True)
    result = advx("train", "dataset=derived", f"dataset.path={unfinished}", "runtime=cpu")
    assert result.exit_code == 2
    assert unwrapped(f"advx construct resume={unfinished}") in unwrapped(result.stderr)


def test_a_sources_held_out_images_stay_out_of_its_derived_data_and_score_models_trained_on_it(advx, workdir):
    """A source trained with a validation split: its derived dataset is built from its training images only, and a
    model trained on that dataset logs and is attacked on the source's held-out images (never the test set)."""
    source = workdir / "source_val"
    assert advx("train", *TINY, *CNN, "dataset.val_size=64", "train.epochs=1",
                f"hydra.run.dir={source}").exit_code == 0
    built = workdir / "from_val_source"
    result = advx("construct", "nonrobust", f"source={source}", "runtime=cpu", "runtime.progress=false",
                  "construct.steps=2", f"hydra.run.dir={built}")
    assert result.exit_code == 0, result.output
    (_, original_labels), _ = synthetic("mnist", 10, 256, 128)
    assert torch.equal(dataset_file(built)["labels"], original_labels[:192])  # the 64 held out are not targets
    plan = make_plan(ConstructConfig(kind="nonrobust"), original_labels[:192], 10, seed=0)
    assert int(plan.start.max()) < 192  # nor start images

    model = workdir / "on_derived"
    result = advx("train", *CNN, "dataset=derived", f"dataset.path={built}", "train.epochs=1", "runtime=cpu",
                  "runtime.progress=false", f"hydra.run.dir={model}")
    assert result.exit_code == 0, result.output
    header = (model / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val_error" in header and "test_error" not in header
    result = advx("attack", f"run={model}", "split=val", "attack=fgsm", "attack.eps=[0.1]", "runtime=cpu",
                  "runtime.progress=false", f"hydra.run.dir={workdir / 'attack_val'}")
    assert result.exit_code == 0, result.output
    assert unwrapped("on 64 val examples") in unwrapped(result.stderr)


def test_split_val_on_data_derived_from_a_source_without_one_is_one_line(advx, workdir, source):
    built = workdir / "no_val"
    assert advx("construct", "ddet", f"source={source}", *RELABEL, f"hydra.run.dir={built}").exit_code == 0
    model = workdir / "on_no_val"
    assert advx("train", *CNN, "dataset=derived", f"dataset.path={built}", "train.epochs=1", "runtime=cpu",
                "runtime.progress=false", f"hydra.run.dir={model}").exit_code == 0
    result = advx("attack", f"run={model}", "split=val", "runtime=cpu")
    assert result.exit_code == 2
    assert "has no validation split" in result.stderr and "Traceback" not in result.output
