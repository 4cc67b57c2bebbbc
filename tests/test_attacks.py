"""Attack invariants on a small trained model: norms, box, FGSM = one PGD step, monotone in eps, PGD >= FGSM."""

from __future__ import annotations

import pytest
import torch

from advx.attacks import Attack, attack_mode, fgsm, pgd, sign_noise, uniform_noise
from advx.data import load_dataset
from advx.evaluate import attack_metrics
from advx.models import build_model
from advx.runtime import Runtime, seed_everything
from advx.schema import DatasetConfig, LoopConfig, OptimConfig, RegimeConfig
from advx.train import fit

CPU = Runtime.from_config(device="cpu", progress=False)


@pytest.fixture(scope="module")
def trained():
    """A small CNN fit to the synthetic dataset, and its test batch."""
    data = load_dataset(DatasetConfig(name="synthetic", train_size=512, test_size=200), CPU.device)
    model = build_model("cnn", data.input_shape, data.num_classes, data.mean, data.std, channels=[8, 16], hidden=32)
    fit(model, data, optim=OptimConfig(name="adam", lr=3e-3), regime=RegimeConfig(name="standard"),
        loop=LoopConfig(epochs=4, batch_size=64), runtime=CPU, generator=seed_everything(0))
    model.eval()
    x, y = data.test.batch(torch.arange(len(data.test)))
    assert (model(x).argmax(1) == y).float().mean() > 0.9
    return model, data, x, y


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("clip", [True, False])
def test_pgd_stays_in_the_ball_and_the_box(trained, norm, clip):
    model, _, x, y = trained
    eps = 0.1 if norm == "linf" else 1.0
    x_adv = pgd(model, x, y, eps=eps, norm=norm, steps=5, random_start=True, clip=clip)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all()
    if clip:
        assert x_adv.min() >= 0 and x_adv.max() <= 1
    elif norm == "linf":
        assert x_adv.min() < 0 or x_adv.max() > 1  # unclipped sign steps leave the box somewhere


def test_fgsm_is_one_unprojected_pgd_step(trained):
    model, _, x, y = trained
    expected = pgd(model, x, y, eps=0.2, norm="linf", steps=1, step_size=0.2, random_start=False, clip=False,
                   project=False)
    assert torch.equal(fgsm(model, x, y, eps=0.2), expected)
    assert torch.allclose((fgsm(model, x, y, eps=0.2) - x).abs(), torch.full_like(x, 0.2))


def robust_accuracy(model, data, attack):
    return 1 - attack_metrics(model, data.test, attack, CPU, batch_size=100)["adv_error"]


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_robust_accuracy_does_not_rise_with_eps(trained, name):
    model, data, _, _ = trained
    torch.manual_seed(0)
    accuracies = [robust_accuracy(model, data, Attack(name=name, eps=eps, steps=10, clip=True))
                  for eps in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)]
    assert all(later <= earlier for earlier, later in zip(accuracies, accuracies[1:], strict=False)), accuracies
    assert accuracies[0] > 0.9 and accuracies[-1] < 0.05  # falls to ~0 at large eps


@pytest.mark.parametrize("eps", [0.03, 0.06, 0.1])
def test_pgd_is_at_least_as_strong_as_fgsm(trained, eps):
    model, data, _, _ = trained
    fgsm_acc = robust_accuracy(model, data, Attack(name="fgsm", eps=eps, clip=True))
    pgd_acc = robust_accuracy(model, data, Attack(name="pgd", eps=eps, steps=20, clip=True))
    assert pgd_acc <= fgsm_acc


def test_noise_of_the_same_size_is_weaker_than_the_attack(trained):
    model, data, x, _ = trained
    torch.manual_seed(0)
    eps = 0.1
    attack_acc = robust_accuracy(model, data, Attack(name="fgsm", eps=eps))
    for noise in ("sign_noise", "uniform_noise"):
        assert robust_accuracy(model, data, Attack(name=noise, eps=eps)) > attack_acc + 0.2
    assert torch.allclose((sign_noise(x, eps=eps) - x).abs(), torch.full_like(x, eps))
    assert (uniform_noise(x, eps=eps) - x).abs().max() <= eps


def test_restarts_keep_the_worst_case_per_example(trained):
    model, data, _, _ = trained
    torch.manual_seed(1)
    one = robust_accuracy(model, data, Attack(name="pgd", eps=0.04, steps=3, random_start=True))
    torch.manual_seed(1)
    five = robust_accuracy(model, data, Attack(name="pgd", eps=0.04, steps=3, random_start=True, restarts=5))
    assert five <= one


def test_targeted_pgd_reaches_its_targets(trained):
    model, _, x, y = trained
    targets = (y + 1) % 10
    x_adv = pgd(model, x, targets, eps=0.5, norm="linf", steps=30, targeted=True)
    assert (model(x_adv).argmax(1) == targets).float().mean() > 0.9


def test_custom_objective_hook(trained):
    """Representation matching (Ilyas et al. 2019) is PGD with a feature loss and an unbounded ball."""
    model, _, x, _ = trained
    goal = model.features(x.flip(0)).detach()

    def distance(z, _labels):
        return (model.features(z) - goal).norm(dim=1)

    start = distance(x, None).mean()
    z = pgd(model, x, torch.zeros(len(x), dtype=torch.long), eps=1e9, norm="l2", steps=20, step_size=0.5,
            targeted=True, objective=distance)
    assert distance(z, None).mean() < 0.7 * start


def test_attack_mode_restores_the_model(trained):
    model, _, x, y = trained
    model.train()
    fgsm(model, x[:4], y[:4], eps=0.1)
    assert model.training and all(p.requires_grad for p in model.parameters())
    with attack_mode(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
    model.eval()
