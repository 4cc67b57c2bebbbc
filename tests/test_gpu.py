"""The CUDA path (skipped without a GPU; `make gpu-check` or `pytest -m gpu` on a CUDA machine): training,
attacks, AutoAttack and constructions on the device, resume with the CUDA RNG state, bf16 autocast, and
torch.compile of a model the attack loop toggles between train and eval mode."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from advx import train as training
from advx.attacks import Attack, pgd
from advx.models import build_model
from advx.runtime import Runtime
from conftest import TINY, metrics, record_saves
from test_resume import history

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

CUDA = ["runtime.device=cuda", "runtime.precision=fp32"]
CNN = [*TINY, *CUDA, "dataset.train_size=512", "model=cnn", "model.channels=[8,16]", "model.hidden=32",
       "optim=adam", "optim.lr=0.003", "train.batch_size=64"]
# dropout and random-start PGD training draw from the CUDA generator every batch: the resume test needs its state
RANDOM = [*TINY, *CUDA, "model=maxout", "model.units=32", "train.epochs=4", "train.batch_size=32", "optim.lr=0.05",
          "regime=pgd_adv", "regime.eps=0.1", "regime.steps=2", "regime.random_start=true", "regime.alpha=0.5"]


def test_training_and_an_attack_run_on_the_gpu(advx, workdir):
    run = workdir / "train"
    result = advx("train", *CNN, "train.epochs=4", "attack=pgd_linf", "attack.eps=0.05", f"hydra.run.dir={run}")
    assert result.exit_code == 0, result.output
    losses = [float(row["train_loss"]) for row in history(run)]
    assert losses[-1] < losses[0] and metrics(run)["test_error"] < 0.3  # chance is 0.9
    attacked = advx("attack", f"run={run}", *CUDA, "runtime.progress=false", "attack=pgd_linf", "attack.eps=0.1",
                    f"hydra.run.dir={workdir / 'a'}")
    assert attacked.exit_code == 0, attacked.output
    assert metrics(workdir / "a")["attacks"][0]["adv_error"] >= metrics(run)["test_error"]


@pytest.mark.parametrize("kind", ["robust", "ddet"])
def test_a_construction_runs_on_the_gpu(advx, workdir, kind):
    source = workdir / "source"
    assert advx("train", *CNN, "train.epochs=2", f"hydra.run.dir={source}").exit_code == 0
    built = workdir / kind
    result = advx("construct", kind, f"source={source}", *CUDA, "runtime.progress=false", "construct.num_examples=64",
                  "construct.chunk_size=32", "construct.steps=5", f"hydra.run.dir={built}")
    assert result.exit_code == 0, result.output
    assert (built / "dataset.pt").is_file() and metrics(built)["examples"] == 64


def test_resume_on_the_gpu_restores_the_cuda_random_state(advx, workdir, monkeypatch):
    straight, killed = workdir / "straight", workdir / "killed"
    assert advx("train", *RANDOM, f"hydra.run.dir={straight}").exit_code == 0
    record_saves(monkeypatch, training, die_after=2)
    assert advx("train", *RANDOM, f"hydra.run.dir={killed}").exit_code == 130
    monkeypatch.undo()
    monkeypatch.chdir(workdir)
    result = advx("train", f"resume={killed}")
    assert result.exit_code == 0, result.output
    assert history(killed) == history(straight)


def test_bf16_autocast_trains_and_attacks_close_to_fp32(advx, workdir):
    runs = {}
    for precision in ("fp32", "bf16"):
        runs[precision] = workdir / precision
        result = advx("train", *CNN, "train.epochs=3", f"runtime.precision={precision}",
                      f"hydra.run.dir={runs[precision]}")
        assert result.exit_code == 0, result.output
    assert all(torch.isfinite(torch.tensor(float(r["train_loss"]))) for r in history(runs["bf16"]))
    assert abs(metrics(runs["bf16"])["test_error"] - metrics(runs["fp32"])["test_error"]) <= 0.1
    model = build_model("cnn", (1, 28, 28), 10, [0.5], [0.25], channels=[8, 16], hidden=32).cuda().eval()
    x, y = torch.rand(64, 1, 28, 28, device="cuda"), torch.randint(0, 10, (64,), device="cuda")
    with Runtime.from_config(device="cuda", precision="bf16").autocast():
        x_adv = pgd(model, x, y, eps=0.1, steps=5)
    assert torch.isfinite(x_adv).all() and (x_adv - x).abs().max() <= 0.1 + 1e-6


def test_compiled_model_toggled_by_attacks_does_not_recompile_without_bound(advx, workdir):
    """Adversarial training crafts each batch in eval mode on the compiled model, evaluation runs it no-grad and
    the active set shrinks its batches: a bounded number of graphs (see tests/test_compile.py's GRAPH_LIMIT)."""
    from test_compile import GRAPH_LIMIT

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    run = workdir / "compiled"
    result = advx("train", *CNN, "train.epochs=3", "runtime=gpu", "regime=fgsm_adv", "regime.eps=0.05",
                  "attack=pgd_linf", "attack.eps=0.05", "attack.steps=10", f"hydra.run.dir={run}")
    assert result.exit_code == 0, result.output
    assert 0 < torch._dynamo.utils.counters["stats"]["unique_graphs"] <= GRAPH_LIMIT
    compiled = torch.compile(build_model("cnn", (1, 28, 28), 10, [0.5], [0.25], channels=[8, 16], hidden=32).cuda())
    x, y = torch.rand(256, 1, 28, 28, device="cuda"), torch.randint(0, 10, (256,), device="cuda")
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for _ in range(3):
        Attack(name="pgd", eps=0.1, steps=10).evaluate(compiled, x, y)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - before <= GRAPH_LIMIT


@pytest.mark.parametrize(("norm", "eps"), [("linf", "0.05"), ("l2", "0.8")])
def test_autoattack_on_the_gpu_agrees_with_the_cpu(advx, workdir, norm, eps):
    """The whole suite (APGD-CE, APGD-T, Square) from the CLI on CUDA, at radii where this tiny CNN keeps 75-92% on
    the CPU: robust accuracy close to the CPU's on the same model and images (the random starts and Square's draws
    come from different device streams)."""
    run = workdir / "train"
    assert advx("train", *CNN, "train.epochs=3", f"hydra.run.dir={run}").exit_code == 0
    robust = {}
    for device in ("cuda", "cpu"):
        out = workdir / device
        result = advx("attack", f"run={run}", f"runtime.device={device}", "runtime.progress=false",
                      "attack=autoattack", f"attack.norm={norm}", f"attack.eps={eps}", "attack.steps=20",
                      "attack.targets=3", "attack.square_queries=200", "num_examples=256", f"hydra.run.dir={out}")
        assert result.exit_code == 0, result.output
        row = metrics(out)["attacks"][0]
        assert row["acc_after_square"] <= row["acc_after_apgd-t"] <= row["acc_after_apgd-ce"]
        robust[device] = 1 - row["adv_error"]
    assert abs(robust["cuda"] - robust["cpu"]) <= 0.05, robust
