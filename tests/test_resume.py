"""A killed training run loses at most the current epoch and, resumed, ends exactly where an uninterrupted
run ends."""

from __future__ import annotations

import csv

from advx import train as training
from conftest import TINY, metrics

RECIPE = [*TINY, "model=maxout", "model.units=32", "train.epochs=4", "train.batch_size=32", "optim.lr=0.05",
          "regime=fgsm_adv", "attack=fgsm", "attack.eps=0.1"]  # dropout and FGSM: every RNG stream matters


def history(run_dir):
    with open(run_dir / "metrics.csv") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def test_resume_after_a_kill_matches_an_uninterrupted_run(advx, workdir, monkeypatch):
    straight = workdir / "straight"
    assert advx("train", *RECIPE, f"hydra.run.dir={straight}").exit_code == 0

    killed = workdir / "killed"
    saves = []
    original = training.save_torch

    def save_then_die(path, obj):
        if len(saves) == 2:
            raise KeyboardInterrupt  # the user hits Ctrl-C (or the job is killed) at the end of epoch 3
        original(path, obj)
        saves.append(path)

    monkeypatch.setattr(training, "save_torch", save_then_die)
    result = advx("train", *RECIPE, f"hydra.run.dir={killed}")
    assert result.exit_code == 130
    assert "advx train resume=" in result.stderr
    assert not (killed / "model.pt").exists() and (killed / "checkpoint" / "last.pt").is_file()
    assert [row["epoch"] for row in history(killed)] == ["1", "2"]
    monkeypatch.setattr(training, "save_torch", original)

    result = advx("train", f"resume={killed}")
    assert result.exit_code == 0, result.output
    assert history(killed) == history(straight)
    assert metrics(killed)["test_error"] == metrics(straight)["test_error"]
    assert metrics(killed)["fgsm_adv_error@0.1"] == metrics(straight)["fgsm_adv_error@0.1"]


def test_resume_of_a_finished_run_changes_nothing(advx, trained_softmax):
    before = metrics(trained_softmax)["test_error"]
    assert advx("train", f"resume={trained_softmax}").exit_code == 0
    assert metrics(trained_softmax)["test_error"] == before
    assert len(history(trained_softmax)) == 3
