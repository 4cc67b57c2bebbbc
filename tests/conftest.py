"""Shared fixtures: the real `advx` CLI invoked in-process on tiny synthetic data, in a temporary dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from advx.cli import app
from advx.data import load_dataset
from advx.models import build_model
from advx.runtime import Runtime, seed_everything
from advx.schema import DatasetConfig, LoopConfig, OptimConfig, RegimeConfig
from advx.train import fit

TINY = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=128", "runtime=cpu",
        "runtime.progress=false"]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run every command from an empty temporary directory (Hydra writes outputs/ there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def advx(workdir: Path):
    """Call the CLI like a user would: advx(\"train\", \"model=softmax\", ...) -> typer Result."""
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    return invoke


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture
def trained_softmax(advx, workdir: Path) -> Path:
    """A softmax model trained for 3 epochs on the synthetic dataset."""
    run_dir = workdir / "softmax"
    result = advx("train", *TINY, "model=softmax", "train.epochs=3", f"hydra.run.dir={run_dir}")
    assert result.exit_code == 0, result.output
    return run_dir


def unwrapped(text: str) -> str:
    """Text with all whitespace removed: compares log lines that the console wrapped at its width."""
    return "".join(text.split())


def record_saves(monkeypatch: pytest.MonkeyPatch, module, die_after: int | None = None) -> list[Path]:
    """Wrap `module.save_torch` so every file it saves is recorded; with `die_after`, the save after that many
    raises KeyboardInterrupt instead (the user hits Ctrl-C, or the job is killed, mid-run)."""
    from advx.runs import save_torch

    saved: list[Path] = []

    def save(path, obj):
        if die_after is not None and len(saved) == die_after:
            raise KeyboardInterrupt
        save_torch(path, obj)
        saved.append(path)

    monkeypatch.setattr(module, "save_torch", save)
    return saved


@pytest.fixture(scope="session")
def trained():
    """A small CNN fit to the synthetic dataset (about 2 s), and its test batch (shared by the attack tests)."""
    cpu = Runtime.from_config(device="cpu", progress=False)
    data = load_dataset(DatasetConfig(name="synthetic", train_size=512, test_size=200), cpu.device)
    torch.manual_seed(0)  # the same model whichever tests ran before
    model = build_model("cnn", data.input_shape, data.num_classes, data.mean, data.std, channels=[8, 16], hidden=32)
    fit(model, data, optim=OptimConfig(name="adam", lr=3e-3), regime=RegimeConfig(name="standard"),
        loop=LoopConfig(epochs=4, batch_size=64), runtime=cpu, generator=seed_everything(0))
    model.eval()
    x, y = data.test.batch(torch.arange(len(data.test)))
    assert (model(x).argmax(1) == y).float().mean() > 0.9
    return model, data, x, y
