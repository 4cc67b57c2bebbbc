"""Damaged files (truncated, emptied, overwritten with garbage): a command that reads one says which file in one
line and leaves the dir as it was; a file advx can rebuild (a construction chunk, a stage of the store) is rebuilt
with a warning instead."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from advx import derived as derived_files
from advx.reproduce import compose_stage
from advx.runs import STATE_FILE, load_model, save_torch, write_json
from advx.stages import RECORD, Stages
from conftest import record_saves, unwrapped
from test_errors import assert_one_line_error, snapshot


def truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(("name", "damage", "fragment"), [
    ("metrics.json", truncate, "metrics.json is damaged"),
    ("metrics.json", lambda p: p.write_text("[1, 2]"), "metrics.json is damaged (not a JSON object)"),
    (".hydra/overrides.yaml", lambda p: p.write_bytes(b"\x00\xff: [garbage"), "overrides.yaml is damaged"),
    (".hydra/overrides.yaml", lambda p: p.write_text("model: softmax\n"), "not a list of overrides"),
])
def test_report_names_the_damaged_file_and_changes_nothing(advx, trained_softmax, name, damage, fragment):
    damage(trained_softmax / name)
    before = snapshot(trained_softmax)
    result = advx("report", str(trained_softmax))
    assert_one_line_error(result, fragment, "rerun the command that made")
    assert snapshot(trained_softmax) == before


def test_report_of_a_sweep_names_the_damaged_job(advx, trained_softmax, workdir):
    sweep = workdir / "sweep"
    sweep.mkdir()
    for job in ("0", "1"):
        (sweep / job / ".hydra").mkdir(parents=True)
        for name in ("metrics.json", ".hydra/overrides.yaml"):
            (sweep / job / name).write_bytes((trained_softmax / name).read_bytes())
    truncate(sweep / "1" / "metrics.json")
    result = advx("report", str(sweep))
    assert_one_line_error(result, str(sweep / "1" / "metrics.json"))
    assert not (sweep / "summary.csv").exists()


def make_derived(folder, damage: str | None = None):
    """A construct-like dir of 32 synthetic-MNIST-shaped examples, optionally with one file damaged."""
    folder.mkdir()
    save_torch(folder / derived_files.DATA_FILE, {"images": torch.rand(32, 1, 28, 28),
                                                  "labels": torch.arange(32) % 10})
    write_json(folder / derived_files.META_FILE, {"source_dataset": {"name": "synthetic", "num_classes": 10}})
    if damage:
        truncate(folder / damage)
    return folder


@pytest.mark.parametrize("damaged", [derived_files.DATA_FILE, derived_files.META_FILE])
def test_training_on_a_damaged_derived_dataset_is_one_line(advx, workdir, damaged):
    assert advx("train", "model=softmax", "dataset=derived", f"dataset.path={make_derived(workdir / 'ok')}",
                "train.epochs=1", "runtime=cpu", "runtime.progress=false",
                f"hydra.run.dir={workdir / 'on_ok'}").exit_code == 0
    folder = make_derived(workdir / "damaged", damage=damaged)
    result = advx("train", "model=softmax", "dataset=derived", f"dataset.path={folder}", "runtime=cpu",
                  "runtime.progress=false", f"hydra.run.dir={workdir / 'run'}")
    assert_one_line_error(result, str(folder / damaged), "advx construct")


RELABEL = ["runtime=cpu", "runtime.progress=false", "construct.num_examples=48", "construct.chunk_size=16",
           "construct.eps=2.0", "construct.steps=5", "construct.step_size=0.4"]


def without_labels(path) -> None:
    chunk = torch.load(path, weights_only=True)
    del chunk["labels"]
    torch.save(chunk, path)


def test_a_damaged_chunk_is_rebuilt_and_the_dataset_comes_out_the_same(advx, workdir, trained_softmax, monkeypatch):
    straight = workdir / "straight"
    assert advx("construct", "ddet", f"source={trained_softmax}", *RELABEL,
                f"hydra.run.dir={straight}").exit_code == 0
    reference = torch.load(straight / derived_files.DATA_FILE, weights_only=True)

    killed = workdir / "killed"
    record_saves(monkeypatch, derived_files, die_after=2)  # killed while the last of three chunks is being saved
    assert advx("construct", "ddet", f"source={trained_softmax}", *RELABEL,
                f"hydra.run.dir={killed}").exit_code == 130
    saved = record_saves(monkeypatch, derived_files)

    for label, damage in [("truncated", truncate), ("empty", lambda p: p.write_bytes(b"")),
                          ("no_labels", without_labels)]:
        resumed = workdir / label
        shutil.copytree(killed, resumed)
        damage(resumed / "chunks" / "00001.pt")
        saved.clear()
        result = advx("construct", f"resume={resumed}")
        assert result.exit_code == 0, result.output
        assert unwrapped(f"damaged chunk: {resumed / 'chunks' / '00001.pt'}") in unwrapped(result.stderr), label
        assert unwrapped("it will be rebuilt") in unwrapped(result.stderr)
        assert [p.name for p in saved if p.parent.name == "chunks"] == ["00001.pt", "00002.pt"]  # 00000 was kept
        built = torch.load(resumed / derived_files.DATA_FILE, weights_only=True)
        for key in ("images", "labels"):
            assert torch.equal(built[key], reference[key]), label


STAGE = ["dataset=synthetic", "dataset.train_size=128", "dataset.test_size=64", "model=softmax", "train.epochs=2"]
COMMON = ["runtime.device=cpu", "runtime.progress=false"]


def train_stage(store):
    stages = Stages(store, COMMON, compose_stage)
    run_dir = stages.train("softmax", STAGE)
    return stages.used[0], run_dir


@pytest.mark.parametrize(("name", "damage"), [
    ("model.pt", truncate),
    ("model.json", lambda p: p.write_text("{")),
    ("metrics.json", truncate),
    ("metrics.csv", lambda p: p.write_bytes(b"\xff\xfe")),
    ("config.yaml", lambda p: p.write_text("dataset: [")),
])
def test_a_finished_stage_with_a_damaged_file_is_rerun_with_a_warning(workdir, caplog, name, damage):
    store = workdir / "store"
    first, run_dir = train_stage(store)
    assert first.ran
    record = json.loads((run_dir / RECORD).read_text())
    damage(run_dir / name)
    with caplog.at_level(logging.WARNING, logger="advx"):
        again, rerun_dir = train_stage(store)
    assert again.ran and rerun_dir == run_dir
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and name in warnings[0] and warnings[0].endswith("rerunning it"), warnings
    assert json.loads((run_dir / RECORD).read_text())["id"] != record["id"]  # a new stage: downstream reruns
    load_model(run_dir, torch.device("cpu"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="advx"):
        reused, _ = train_stage(store)
    assert not reused.ran and not caplog.records


def test_an_unfinished_stage_with_a_damaged_training_state_starts_again(workdir, caplog):
    store = workdir / "store"
    _, run_dir = train_stage(store)
    (run_dir / RECORD).unlink()  # as if killed before the stage was recorded
    (run_dir / "model.pt").unlink()
    truncate(run_dir / STATE_FILE)
    with caplog.at_level(logging.WARNING, logger="advx"):
        again, _ = train_stage(store)
    assert again.ran and (run_dir / RECORD).is_file()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "last.pt is damaged" in warnings[0] and "starting it again" in warnings[0]
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 1 + 2  # trained from scratch: both epochs


def test_a_finished_construct_stage_with_a_damaged_dataset_is_rebuilt(workdir, caplog):
    store = workdir / "store"
    stages = Stages(store, COMMON, compose_stage)
    source = stages.train("softmax", STAGE)
    knobs = ["construct=ddet", f"source={source}", "construct.num_examples=16", "construct.chunk_size=16",
             "construct.steps=2"]
    built = stages.construct("ddet", knobs)
    truncate(built / derived_files.DATA_FILE)
    with caplog.at_level(logging.WARNING, logger="advx"):
        again = Stages(store, COMMON, compose_stage)
        assert again.construct("ddet", knobs) == built
    assert [use.ran for use in again.used] == [True]
    assert any("dataset.pt is damaged" in r.getMessage() for r in caplog.records)
    images, labels, _ = derived_files.read_derived(built)
    assert len(images) == len(labels) == 16
