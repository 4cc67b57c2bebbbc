"""The model registry: shapes, output kinds, the max-norm constraint, and logistic FGSM's closed form."""

from __future__ import annotations

import pytest
import torch

from advx.attacks import fgsm
from advx.hydra_bridge import compose_job, group_options
from advx.models import build_model, per_example_loss, probabilities
from advx.runtime import Runtime


@pytest.mark.parametrize("option", group_options("model"))
def test_every_model_maps_inputs_to_logits(option):
    cfg = compose_job("train", [f"model={option}"]).model
    hparams = {k: v for k, v in vars(cfg).items() if k != "name"}
    two_class = option in ("logistic", "quadratic")
    shape, classes = ((3, 32, 32), 10) if option == "resnet18" else ((1, 28, 28), 2 if two_class else 10)
    model = build_model(cfg.name, shape, classes, [0.5] * shape[0], [0.25] * shape[0], **hparams).eval()
    x = torch.rand(3, *shape)
    logits = model(x)
    assert logits.shape == (3, classes)
    assert torch.allclose(model.head(model.features(x)), logits)  # the split representation attacks rely on
    p = probabilities(logits, model.output)
    if model.output == "softmax":
        assert torch.allclose(p.sum(1), torch.ones(3))
    assert torch.equal(p.argmax(1), logits.argmax(1))  # probabilities are monotone in the logits
    assert torch.isfinite(per_example_loss(logits, torch.tensor([0, 1, 1]), model.output)).all()


def test_max_col_norm_bounds_every_unit():
    model = build_model("maxout", (1, 28, 28), 10, [0.0], [1.0], units=16, pieces=3, max_col_norm=0.5)
    for p in model.parameters():
        p.data.mul_(1000)
    model.constrain()
    for layer in (m for m in model.modules() if isinstance(m, torch.nn.Linear)):
        assert layer.weight.norm(dim=1).max() <= 0.5 + 1e-5


def test_rbf_probabilities_are_independent_and_vanish_far_away():
    model = build_model("rbf", (1, 28, 28), 10, [0.0], [1.0], output="exp", init_beta=0.05)
    p = probabilities(model(torch.randn(5, 1, 28, 28) * 10), "exp")
    assert p.max() < 1e-3  # Goodfellow's rubbish-class argument: RBF units are not confident far from data


def test_fgsm_on_logistic_regression_shrinks_the_margin_by_eps_l1(monkeypatch):
    """Goodfellow 2015, Sec. 5: for z = w.x + b, FGSM moves z by eps * ||w||_1 against the label."""
    torch.manual_seed(0)
    model = build_model("logistic", (1, 28, 28), 2, [0.0], [1.0]).eval()
    x, y = torch.rand(8, 1, 28, 28), torch.tensor([0, 1] * 4)
    w = model.head.linear.weight
    z = model(x)[:, 1]
    z_adv = model(fgsm(model, x, y, eps=0.25))[:, 1]
    shift = 0.25 * w.abs().sum()
    expected = torch.where(y == 1, z - shift, z + shift)
    assert torch.allclose(z_adv, expected, atol=1e-4)


def test_channels_last_on_the_cpu_only_for_stride_one_convolutions_and_never_when_told():
    """runtime.channels_last=auto: the CNN goes channels-last on the CPU (faster there) with the same logits and
    input gradients; a ResNet, whose strided 1x1 shortcuts corrupt the heap in that layout on the CPU, keeps its
    own; `never` keeps the default layout."""
    def laid_out_channels_last(model: torch.nn.Module) -> bool:
        return model.features[4].weight.is_contiguous(memory_format=torch.channels_last)  # the 4 -> 8 convolution

    def cnn() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model("cnn", (1, 28, 28), 10, [0.5], [0.25], channels=[4, 8], hidden=16).eval()

    auto = Runtime(torch.device("cpu"), "fp32", False, False)
    assert not laid_out_channels_last(Runtime(torch.device("cpu"), "fp32", False, False, "never").prepare(cnn()))
    reference, prepared = cnn(), auto.prepare(cnn())
    assert laid_out_channels_last(prepared)
    gradients = []
    for model in (reference, prepared):
        x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(1), requires_grad=True)
        logits = model(x)
        gradients.append((logits.detach(), *torch.autograd.grad(logits.sum(), x)))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*gradients, strict=True))
    resnet = auto.prepare(build_model("resnet", (3, 32, 32), 10, [0.5] * 3, [0.25] * 3, width=4))
    assert all(m.weight.is_contiguous() for m in resnet.modules() if isinstance(m, torch.nn.Conv2d))
