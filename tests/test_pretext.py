"""The self-supervised regimes (simclr, mae, ddpm) through the real CLI on tiny synthetic data: runs finish and
save an encoder that reloads exactly (and without its pretext parts, as a probe loads it), the objectives are
optimised, the DDPM representation is a fixed function, and an untrained head is never attacked."""

from __future__ import annotations

import csv

import pytest
import torch

import advx.train as training
from advx.models import build_model
from advx.pretext import info_nce, pretext_loss, simclr_embed
from advx.runs import MODEL_FILE, STATE_FILE, load_model, load_tensors
from advx.schema import RegimeConfig
from conftest import TINY, metrics

SMALL = ["dataset.train_size=128", "optim=adam", "optim.lr=0.002", "train.batch_size=64"]
MODELS = {  # the regime's encoder, shrunk where the cpu defaults would slow the test down
    "simclr": ["model=cnn", "model.channels=[8,16]", "model.hidden=32"],
    "mae": ["model=vit", "model.width=32", "model.depth=2", "model.decoder_width=32", "model.decoder_depth=1"],
    "ddpm": ["model=unet", "model.channels=16", "model.multipliers=[1,2]"],
}
CASES = [("simclr", "mnist"), ("simclr", "cifar"), ("mae", "mnist"), ("mae", "cifar"), ("ddpm", "mnist"),
         ("ddpm", "cifar")]


def _train(advx, workdir, regime: str, shape: str, *extra: str):
    run_dir = workdir / f"{regime}-{shape}"
    result = advx("train", *TINY, *SMALL, f"dataset.shape={shape}", f"regime={regime}", *MODELS[regime],
                  "train.epochs=2", *extra, f"hydra.run.dir={run_dir}")
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.mark.parametrize(("regime", "shape"), CASES)
def test_regime_trains_an_encoder_that_reloads_exactly(advx, workdir, regime, shape):
    run_dir = _train(advx, workdir, regime, shape)
    assert (run_dir / MODEL_FILE).is_file()
    result = metrics(run_dir)
    assert set(result) == {"pretext_loss", "epochs", "train_seconds"} and result["epochs"] == 2
    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and "test_error" not in rows[0] and "train_error" not in rows[0]

    model, spec = load_model(run_dir, torch.device("cpu"))
    assert spec["hparams"]["pretext"] == regime and model.pretext is not None
    trained = build_model(spec["model"], spec["input_shape"], spec["num_classes"], spec["mean"], spec["std"],
                          **spec["hparams"])
    trained.load_state_dict(load_tensors(run_dir / STATE_FILE, "")["model"])  # the weights as training left them
    x = torch.rand(5, *spec["input_shape"])
    features = model.features(x)
    assert features.shape == (5, model.head.in_features)
    assert torch.equal(features, trained.eval().features(x))

    # a probe rebuilds the encoder without its pretext parts and loads only features.* and head.*
    bare = {k: v for k, v in spec["hparams"].items() if k != "pretext"}
    probe = build_model(spec["model"], spec["input_shape"], spec["num_classes"], spec["mean"], spec["std"], **bare)
    state = load_tensors(run_dir / MODEL_FILE, "")
    probe.load_state_dict({k: v for k, v in state.items() if not k.startswith("pretext.")})
    assert probe.pretext is None and torch.equal(probe.eval().features(x), features)


@pytest.mark.parametrize("regime", ["simclr", "mae", "ddpm"])
def test_the_objective_is_optimised_on_a_fixed_batch(regime):
    torch.manual_seed(0)
    shape = (1, 28, 28)
    hparams = {"simclr": {"channels": [8, 16], "hidden": 32}, "mae": {"width": 32, "depth": 2},
               "ddpm": {"channels": 16, "multipliers": [1, 2]}}[regime]
    name = {"simclr": "cnn", "mae": "vit", "ddpm": "unet"}[regime]
    model = build_model(name, shape, 10, [0.5], [0.25], pretext=regime, **hparams)
    cfg = RegimeConfig(name=regime)
    x = torch.rand(32, *shape)

    def loss_at_fixed_draws() -> float:  # the same views, masks, steps and noise every time
        torch.manual_seed(1)
        return pretext_loss(model, x, cfg, torch.Generator().manual_seed(1)).item()

    before = loss_at_fixed_draws()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(2)
    for _ in range(15):
        loss = pretext_loss(model, x, cfg, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss_at_fixed_draws() < 0.97 * before  # simclr on noise images: 4.14 -> 4.01; mae 0.84x, ddpm 0.3x


def test_ddpm_representation_is_a_fixed_function_of_each_image():
    model = build_model("unet", (3, 32, 32), 10, [0.5] * 3, [0.25] * 3, channels=16, multipliers=[1, 2]).eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        first, second, alone = model.features(x), model.features(x), model.features(x[2:3])
    assert torch.equal(first, second)
    assert torch.allclose(alone, first[2:3], atol=1e-5)  # nor does it depend on the rest of the batch


def test_info_nce_prefers_agreeing_views():
    z = torch.randn(16, 8)
    agreeing = info_nce(z, z.clone(), temperature=0.5)
    unrelated = info_nce(z, torch.randn(16, 8), temperature=0.5)
    assert agreeing.shape == (16,) and agreeing.dtype == torch.float32
    assert agreeing.mean() < unrelated.mean()
    assert torch.allclose(info_nce(z, z, 0.5), info_nce(z.half(), z.half(), 0.5), atol=1e-2)  # fp32 inside


def test_simclr_embed_is_the_projection_of_the_features():
    model = build_model("cnn", (1, 28, 28), 10, [0.5], [0.25], pretext="simclr", channels=[8], hidden=32,
                        projection=[24, 12])
    x = torch.rand(3, 1, 28, 28)
    assert simclr_embed(model, x).shape == (3, 12)
    assert [k for k in model.state_dict() if k.startswith("pretext.")]  # saved with the model


@pytest.mark.parametrize("regime", ["simclr", "mae"])
def test_a_killed_run_resumes_to_the_same_losses(advx, workdir, monkeypatch, regime):
    straight = _train(advx, workdir, regime, "mnist", "train.epochs=3")
    saves, original = [], training.save_torch

    def save_then_die(path, obj):
        if len(saves) == 1:
            raise KeyboardInterrupt  # killed at the end of epoch 2
        original(path, obj)
        saves.append(path)

    monkeypatch.setattr(training, "save_torch", save_then_die)
    killed = workdir / "killed"
    args = [*TINY, *SMALL, f"regime={regime}", *MODELS[regime], "train.epochs=3"]
    assert advx("train", *args, f"hydra.run.dir={killed}").exit_code == 130
    monkeypatch.setattr(training, "save_torch", original)
    assert advx("train", f"resume={killed}").exit_code == 0
    assert metrics(killed)["pretext_loss"] == metrics(straight)["pretext_loss"]


def test_an_untrained_head_is_not_attacked(advx, workdir):
    result = advx("train", *TINY, "regime=simclr", "model=cnn", "attack=fgsm", f"hydra.run.dir={workdir / 'r'}")
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "attack=fgsm" in result.output
    assert not (workdir / "r").exists()


def test_pretext_tied_to_its_architecture(advx, workdir):
    result = advx("train", *TINY, "regime=mae", "model=cnn", f"hydra.run.dir={workdir / 'r'}")
    assert result.exit_code == 2 and "model=vit" in result.output
