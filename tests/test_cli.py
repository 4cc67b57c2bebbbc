"""The CLI end to end on synthetic data: train -> attack -> transfer -> sweep -> report, and the help."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from advx import __version__
from conftest import TINY, metrics


def test_version(advx):
    result = advx("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"advx {__version__}"


def test_help_lists_config_groups_and_options(advx):
    result = advx("train", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # the help is wrapped to the terminal's width
    assert ("model: cnn, conv_maxout, logistic, maxout, quadratic, rbf, relu_mlp, resnet18, resnet50, softmax"
            in text)
    assert "regime: ddpm, fgsm_adv, mae, noise, pgd_adv, pgd_l2, simclr, standard" in text
    construct_help = " ".join(advx("construct", "--help").output.split())
    assert "construct: ddet, dnoise, drand, nonrobust, robust" in construct_help


def test_train_writes_a_self_describing_run_dir(trained_softmax):
    for name in ("config.yaml", "env.json", "metrics.csv", "metrics.json", "model.pt", "model.json", "train.log",
                 ".hydra/overrides.yaml", "checkpoint/last.pt"):
        assert (trained_softmax / name).is_file(), name
    with open(trained_softmax / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert metrics(trained_softmax)["test_error"] < 0.5  # learnable: far below chance (0.9) after 3 epochs
    env = json.loads((trained_softmax / "env.json").read_text())
    assert env["device"] == "cpu" and env["torch"]
    assert not list(trained_softmax.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_attack_reports_error_and_confidence_per_eps(advx, trained_softmax, workdir):
    out = workdir / "attack"
    result = advx("attack", f"run={trained_softmax}", "attack=fgsm", "attack.eps=[0,0.1,0.3]",
                  "runtime.progress=false", f"hydra.run.dir={out}")
    assert result.exit_code == 0, result.output
    rows = metrics(out)["attacks"]
    assert [r["eps"] for r in rows] == [0.0, 0.1, 0.3]
    assert rows[0]["adv_error"] == rows[0]["clean_error"]  # eps 0 changes nothing
    assert rows[2]["adv_error"] > rows[0]["adv_error"]
    assert rows[2]["adv_error"] > 0.9  # a linear model on 784 pixels falls at eps 0.3
    assert rows[0]["adv_confidence"] == pytest.approx(rows[0]["clean_confidence"])  # and no confidence either
    assert abs(rows[1]["mean_linf"] - 0.1) < 1e-6
    assert "adv_error" in result.stdout


def test_transfer_crafts_on_the_source_model(advx, trained_softmax, workdir):
    target = workdir / "cnn"
    result = advx("train", *TINY, "model=cnn", "train.epochs=2", f"hydra.run.dir={target}")
    assert result.exit_code == 0, result.output
    out = workdir / "transfer"
    result = advx("attack", f"run={target}", f"source={trained_softmax}", "attack.eps=0.2",
                  f"hydra.run.dir={out}")
    assert result.exit_code == 0, result.output
    assert metrics(out)["source"] == str(trained_softmax)
    direct = workdir / "direct"
    advx("attack", f"run={target}", "attack.eps=0.2", f"hydra.run.dir={direct}")
    assert metrics(out)["attacks"][0]["adv_error"] != metrics(direct)["attacks"][0]["adv_error"]


def test_sweep_makes_one_run_per_job_and_a_summary(advx, workdir):
    sweep = workdir / "sweep"
    result = advx("train", "-m", *TINY, "model=softmax", "train.epochs=1", "seed=0,1", "optim.lr=0.05,0.1",
                  f"hydra.sweep.dir={sweep}")
    assert result.exit_code == 0, result.output
    jobs = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert jobs == ["0", "1", "2", "3"]
    with open(sweep / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and {"seed", "optim.lr", "test_error"} <= set(rows[0])
    assert {(r["seed"], r["optim.lr"]) for r in rows} == {("0", "0.05"), ("0", "0.1"), ("1", "0.05"), ("1", "0.1")}
    report = advx("report", str(sweep))
    assert report.exit_code == 0 and "test_error" in report.stdout


def test_config_prints_the_resolved_config(advx):
    result = advx("config", "train", "model=rbf", "optim=adam")
    assert result.exit_code == 0, result.output
    assert "init_beta: 0.01" in result.stdout and "name: adam" in result.stdout


@pytest.mark.parametrize("launcher", ["local", "slurm_local"])
def test_launchers_run_jobs_in_other_processes(advx, workdir, launcher):
    sweep = workdir / launcher
    result = advx("train", "-m", f"hydra/launcher={launcher}", *TINY, "model=softmax", "train.epochs=1", "seed=0,1",
                  f"hydra.sweep.dir={sweep}")
    assert result.exit_code == 0, result.output
    assert len(list(sweep.glob("*/metrics.json"))) == 2
    assert (sweep / "summary.csv").is_file()


def test_early_stopping_restores_the_best_weights(advx, workdir):
    run_dir = workdir / "early"
    result = advx("train", *TINY, "dataset.val_size=64", "model=softmax", "train.epochs=40", "train.patience=2",
                  f"hydra.run.dir={run_dir}")
    assert result.exit_code == 0, result.output
    with open(run_dir / "metrics.csv") as handle:
        history = list(csv.DictReader(handle))
    final = metrics(run_dir)
    assert final["epochs"] < 40  # the synthetic validation error stops improving long before
    assert final["epochs"] == final["best_epoch"] + 2
    assert final["val_error"] == min(float(row["val_error"]) for row in history)


def test_python_dash_m_is_the_same_command():
    result = subprocess.run([sys.executable, "-m", "advx", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"advx {__version__}"


def test_bf16_autocast_trains_and_attacks_on_the_cpu(advx, workdir):
    """The mixed-precision path a GPU run takes (runtime.precision=bf16), exercised on the CPU."""
    run_dir = workdir / "bf16"
    result = advx("train", *TINY, "model=cnn", "runtime.precision=bf16", "train.epochs=2", "attack=fgsm",
                  "attack.eps=0.3", f"hydra.run.dir={run_dir}")
    assert result.exit_code == 0, result.output
    final = metrics(run_dir)
    assert final["test_error"] < 0.5 and final["fgsm_adv_error@0.3"] > final["test_error"]
    assert json.loads((run_dir / "env.json").read_text())["precision"] == "bf16"


def test_report_of_a_single_run(advx, trained_softmax):
    result = advx("report", str(trained_softmax))
    assert result.exit_code == 0, result.output
    assert "test_error" in result.stdout


def test_attack_on_the_validation_split(advx, workdir, trained_softmax):
    run_dir = workdir / "held_out"
    result = advx("train", *TINY, "dataset.val_size=64", "model=softmax", "train.epochs=2", f"hydra.run.dir={run_dir}")
    assert result.exit_code == 0, result.output
    out = workdir / "val_attack"
    result = advx("attack", f"run={run_dir}", "split=val", "attack.eps=[0]", "runtime.progress=false",
                  f"hydra.run.dir={out}")
    assert result.exit_code == 0, result.output
    assert metrics(out)["clean_error"] == pytest.approx(metrics(run_dir)["val_error"])  # the held-out 64 examples
    refused = advx("attack", f"run={trained_softmax}", "split=val", "runtime.progress=false")
    assert refused.exit_code == 2 and "split=val needs a run trained with dataset.val_size > 0" in refused.output
