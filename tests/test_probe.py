"""`advx probe`: a linear probe on a frozen encoder, through the real CLI on synthetic data."""

from __future__ import annotations

from pathlib import Path

import torch
from tests.conftest import TINY, metrics

from advx.runs import load_model
from advx.stages import Stages

CNN = ["model=cnn", "model.channels=[8,16]", "model.hidden=32", "optim=sgd", "optim.lr=0.05"]


def _train(advx, workdir: Path, epochs: int = 3) -> Path:
    run = workdir / "encoder"
    result = advx("train", *TINY, *CNN, f"train.epochs={epochs}", f"hydra.run.dir={run}")
    assert result.exit_code == 0, result.output
    return run


def test_probe_fits_a_head_on_frozen_features_and_attacks_end_to_end(advx, workdir):
    encoder = _train(advx, workdir)
    result = advx("probe", f"run={encoder}", "runtime=cpu", "runtime.progress=false", f"hydra.run.dir={workdir / 'p'}")
    assert result.exit_code == 0, result.output
    found = metrics(workdir / "p")
    assert found["feature_dim"] == 32 and found["encoder"] == str(encoder.resolve())
    assert found["test_error"] < 0.5  # the synthetic classes are separable in a trained CNN's features
    probe, _ = load_model(workdir / "p", torch.device("cpu"))
    trained, _ = load_model(encoder, torch.device("cpu"))
    for name, weight in trained.features.state_dict().items():  # the encoder is frozen: only the head changed
        assert torch.equal(probe.features.state_dict()[name], weight)
    attacked = advx("attack", f"run={workdir / 'p'}", "attack=fgsm", "attack.eps=0.3", "runtime=cpu",
                    "runtime.progress=false", f"hydra.run.dir={workdir / 'a'}")
    assert attacked.exit_code == 0, attacked.output
    assert metrics(workdir / "a")["clean_error"] == found["test_error"]  # the saved model is encoder + probe


def test_untrained_control_and_a_named_dataset(advx, workdir):
    encoder = _train(advx, workdir)
    control = advx("probe", f"run={encoder}", "probe.untrained=true", "runtime=cpu", "runtime.progress=false",
                   f"hydra.run.dir={workdir / 'c'}")
    assert control.exit_code == 0, control.output
    probe, _ = load_model(workdir / "c", torch.device("cpu"))
    trained, _ = load_model(encoder, torch.device("cpu"))
    probed, learned = dict(probe.features.named_parameters()), dict(trained.features.named_parameters())
    assert not any(torch.equal(probed[name], weight) for name, weight in learned.items())  # random, not learned
    other = advx("probe", f"run={encoder}", "dataset=synthetic", "dataset.train_size=64", "dataset.test_size=32",
                 "runtime=cpu", "runtime.progress=false", f"hydra.run.dir={workdir / 'o'}")
    assert other.exit_code == 0, other.output
    assert (workdir / "o" / "config.yaml").read_text().count("train_size: 64") == 1


def test_bad_probe_input_is_one_line(advx, workdir):
    result = advx("probe", f"run={workdir / 'missing'}", "runtime=cpu")
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output
    encoder = _train(advx, workdir, epochs=1)
    result = advx("probe", f"run={encoder}", "dataset=synthetic", "dataset.shape=cifar", "runtime=cpu",
                  "runtime.progress=false", f"hydra.run.dir={workdir / 'x'}")
    assert result.exit_code == 2 and "takes inputs" in result.output


def test_probe_stage_is_reused_and_keyed_by_its_encoder(advx, workdir):
    from advx.reproduce import compose_stage

    encoder = _train(advx, workdir)
    stages = Stages(workdir / "store", ["runtime=cpu", "runtime.progress=false"], compose_stage)
    first, found = stages.probe("probe", [f"run={encoder}"])
    again, _ = stages.probe("probe", [f"run={encoder}"])
    assert first == again and [use.ran for use in stages.used] == [True, False]
    retrained = _train(advx, workdir / "second", epochs=2)  # other weights: a new key
    other, _ = stages.probe("probe", [f"run={retrained}"])
    assert other != first and 0 <= found["test_error"] <= 1
