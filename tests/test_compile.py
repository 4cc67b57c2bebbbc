"""torch.compile on the CPU (inductor, gcc): a compiled model trains to what eager training reaches, `advx attack`
compiles what it loads to the same result, and the evaluation attacks that toggle it between train and eval mode
compile a bounded number of graphs; the GPU check script runs its CPU-sized slices."""

from __future__ import annotations

import torch
import torch._dynamo

from advx import gpu_check
from conftest import TINY, metrics

CNN_FGSM = [*TINY, "dataset.train_size=512", "model=cnn", "model.channels=[8,16]", "model.hidden=32",
            "train.epochs=4", "train.batch_size=64", "optim=adam", "optim.lr=0.003", "regime=fgsm_adv",
            "regime.eps=0.05", "attack=pgd_linf", "attack.eps=0.05", "attack.steps=5"]
# Graphs one compiled model may need: forward in train mode with parameter gradients, forward in eval mode with
# input gradients (the FGSM of each training batch), eval no-grad (per-epoch error), each at the full batch and
# once more with the batch dimension dynamic (last batch, shrinking active sets); twice that leaves room for
# Dynamo's own splits. A storm (one graph per batch or per toggle) is in the dozens.
GRAPH_LIMIT = 12


def test_a_compiled_model_trains_like_eager_without_a_recompilation_storm(advx, workdir):
    eager = workdir / "eager"
    assert advx("train", *CNN_FGSM, f"hydra.run.dir={eager}").exit_code == 0
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = workdir / "compiled"
    result = advx("train", *CNN_FGSM, "runtime.compile=true", f"hydra.run.dir={compiled}")
    assert result.exit_code == 0, result.output
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert 0 < graphs <= GRAPH_LIMIT
    assert abs(metrics(compiled)["test_error"] - metrics(eager)["test_error"]) <= 0.05
    assert metrics(compiled)["test_error"] < 0.5  # learned: chance is 0.9
    attacks = {}
    for compile_ in ("false", "true"):  # `advx attack` compiles the loaded model too, to the same result
        torch._dynamo.utils.counters.clear()
        attacks[compile_] = workdir / f"attack-{compile_}"
        result = advx("attack", f"run={eager}", f"runtime.compile={compile_}", "attack=pgd_linf", "attack.eps=0.1",
                      "attack.steps=5", "runtime.progress=false", f"hydra.run.dir={attacks[compile_]}")
        assert result.exit_code == 0, result.output
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        assert (0 < graphs <= GRAPH_LIMIT) if compile_ == "true" else graphs == 0
    adv_errors = [metrics(attacks[c])["attacks"][0]["adv_error"] for c in ("true", "false")]
    assert abs(adv_errors[0] - adv_errors[1]) <= 0.02


def test_the_gpu_check_runs_its_cpu_sized_slices(capsys):
    gpu_check.main(["--device", "cpu", "--tiny", "--steps", "1"])
    printed = capsys.readouterr().out
    for paper in ("goodfellow2015", "ilyas2019", "gilmer2018", "li2023"):
        assert paper in printed
    assert printed.count("projected") == 10 and "samples/s" in printed  # one line per slice, li2023 three
