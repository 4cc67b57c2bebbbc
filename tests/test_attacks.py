"""Attack invariants on a small trained model: norms, box, FGSM = one PGD step, monotone in eps, PGD >= FGSM."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch

from advx.attacks import Attack, default_clip, fgsm, pgd, pgd_until_fooled, sign_noise, uniform_noise
from advx.data import Split
from advx.errors import ConfigError
from advx.evaluate import attack_metrics, error_rate
from advx.hydra_bridge import compose_job, group_options
from advx.runtime import Runtime, eval_mode
from advx.schema import AttackConfig, RegimeConfig
from advx.spheres import relu_mlp

CPU = Runtime.from_config(device="cpu", progress=False)


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
    """x + eps * sign(grad): every pixel moves by exactly eps, except where the input gradient is exactly zero
    (sign(0) = 0; dead ReLUs and max-pooling leave such pixels), which stay put."""
    model, _, x, y = trained
    expected = pgd(model, x, y, eps=0.2, norm="linf", steps=1, step_size=0.2, random_start=False, clip=False,
                   project=False)
    x_adv = fgsm(model, x, y, eps=0.2)
    assert torch.equal(x_adv, expected)
    with eval_mode(model):
        x_grad = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x_grad), y, reduction="sum"), x_grad)
    moved = grad != 0
    assert moved.float().mean() > 0.5  # the premise: most pixels have a gradient
    assert torch.allclose((x_adv - x).abs()[moved], torch.full_like(x[moved], 0.2))
    assert torch.equal(x_adv[~moved], x[~moved])
    assert torch.equal((x_adv - x).sign()[moved], grad.sign()[moved])  # ascends the loss


def test_fgsm_leaves_an_example_with_zero_gradient_unmoved():
    """The premise above, made deterministic: a saturated softmax (p = 1 in fp32) has an exactly zero input
    gradient, so sign(0) = 0 and FGSM moves nothing, while an unsaturated example moves by eps everywhere."""
    model = torch.nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1000.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        model.bias.zero_()
    x, y = torch.tensor([[1.0, 0.2, 0.3, 0.4], [0.01, 0.02, 0.3, 0.4]]), torch.tensor([0, 1])
    x_adv = fgsm(model, x, y, eps=0.1)
    assert torch.equal(x_adv[0], x[0])  # class 0 wins by a logit margin of ~1000: the gradient is exactly 0
    assert torch.allclose((x_adv[1] - x[1]).abs()[:2], torch.full((2,), 0.1))  # nonzero gradient: moved by eps
    assert torch.equal(x_adv[1, 2:], x[1, 2:])  # zero weights, zero gradient: unmoved


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


class Recorder(torch.nn.Module):
    """The model, noting which examples any of its forward passes over the whole batch misclassifies."""

    def __init__(self, model, y):
        super().__init__()
        self.model, self.y = model, y
        self.fooled = torch.zeros_like(y, dtype=torch.bool)

    def forward(self, x):
        logits = self.model(x)
        if len(x) == len(self.y):
            self.fooled |= logits.argmax(1) != self.y
        return logits


def test_active_set_gives_the_best_iterate_result_of_attacking_everything(trained):
    """Dropping fooled examples changes nothing: the same examples are fooled as when every example is attacked
    for every step of every restart and counted fooled at any iterate (the clean input included). Steps twice
    the ball's radius make iterates jump, so some examples are fooled on the way and recover by the last step:
    those final-iterate counting misses, and the check is not vacuous."""
    model, data, x, y = trained
    recovered = 0
    for norm, eps in (("linf", 0.06), ("l2", 1.2)):
        for random_start, restarts in ((False, 1), (True, 1), (True, 3)):
            full = Recorder(model, y)
            full(x)
            torch.manual_seed(3)
            x_last = pgd(full, x, y, eps=eps, norm=norm, steps=8, step_size=2 * eps, random_start=random_start,
                         restarts=restarts)
            full(x_last)
            torch.manual_seed(3)
            outcome = pgd_until_fooled(model, x, y, eps=eps, norm=norm, steps=8, step_size=2 * eps,
                                       random_start=random_start, restarts=restarts)
            fooled = outcome.logits.argmax(1) != y
            assert 0 < int(full.fooled.sum()) < len(y)  # the radius leaves something to decide
            assert torch.equal(fooled, full.fooled), (norm, random_start, restarts)
            assert torch.equal(model(outcome.x_adv).argmax(1) != y, fooled)  # x_adv is the iterate counted
            with torch.no_grad():  # the clean logits, from iterate 0 when that is the clean input
                assert torch.allclose(outcome.clean_logits, model(x), atol=1e-6), (norm, random_start)
            assert outcome.example_steps < len(y) * 8 * restarts  # decided examples took no further steps
            delta = (outcome.x_adv - x).flatten(1)
            assert (delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)).max() <= eps + 1e-5
            recovered += int((fooled & (model(x_last).argmax(1) == y)).sum())
    assert recovered > 0


def test_robust_accuracy_is_measured_with_the_active_set(trained):
    """attack_metrics' adversarial error is the best-iterate one, and its attack takes fewer than all steps."""
    model, data, x, y = trained
    attack = Attack(name="pgd", eps=0.06, steps=8, random_start=True)
    torch.manual_seed(5)
    metrics = attack_metrics(model, data.test, attack, CPU)
    torch.manual_seed(5)
    outcome = pgd_until_fooled(model, x, y, eps=0.06, steps=8, random_start=True)
    assert metrics["adv_error"] == pytest.approx((outcome.logits.argmax(1) != y).float().mean().item())
    assert metrics["steps_per_example"] < 8


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


def test_eval_mode_restores_the_model(trained):
    model, _, x, y = trained
    model.train()
    fgsm(model, x[:4], y[:4], eps=0.1)
    assert model.training and all(p.requires_grad for p in model.parameters())
    with eval_mode(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
    model.eval()


def bn_mlp() -> torch.nn.Module:
    """Gilmer et al.'s batch-norm ReLU MLP, small, with running statistics that differ from a fresh model's."""
    torch.manual_seed(0)
    model = relu_mlp(10, width=16, depth=2, classes=4)
    with torch.no_grad():
        model(torch.randn(64, 10) * 3 + 1)  # move the running statistics away from their initial values
    return model.train()


def bn_buffers(model: torch.nn.Module) -> list[torch.Tensor]:
    return [b.clone() for b in model.buffers()]


def test_targeted_attack_on_a_batch_norm_model_in_train_mode():
    """The class probe of a targeted attack runs in eval mode: no crash on one example, no statistics update."""
    model = bn_mlp()
    before = bn_buffers(model)
    x, y = torch.randn(8, 10), torch.arange(8) % 4
    attack = Attack(name="pgd", eps=0.5, norm="l2", steps=3, targeted=True, target="next")
    x_adv = attack(model, x, y)
    assert model.training and x_adv.shape == x.shape
    assert all(torch.equal(a, b) for a, b in zip(bn_buffers(model), before, strict=True))


def test_evaluation_leaves_the_model_in_its_mode_and_batch_norm_untouched():
    model = bn_mlp()
    before = bn_buffers(model)
    split = Split(torch.randn(40, 10), torch.arange(40) % 4, boxed=False)
    expected = copy.deepcopy(model).eval()
    metrics = attack_metrics(model, split, Attack(name="fgsm", eps=0.1), CPU, batch_size=16)
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(bn_buffers(model), before, strict=True))
    with torch.no_grad():
        clean_error = (expected(split.images).argmax(1) != split.labels).float().mean().item()
    assert metrics["clean_error"] == pytest.approx(clean_error)  # scored with the running statistics
    assert error_rate(model, split, CPU, batch_size=16) == pytest.approx(clean_error)
    assert model.training


def test_clipping_is_refused_on_data_without_a_box():
    model = bn_mlp()
    split = Split(torch.randn(8, 10), torch.arange(8) % 4, boxed=False)
    with pytest.raises(ConfigError, match="attack.clip=true clips to the \\[0, 1\\] box"):
        attack_metrics(model, split, Attack(name="pgd", eps=0.1, steps=2), CPU)
    assert attack_metrics(model, split, Attack(name="pgd", eps=0.1, steps=2, clip=False), CPU)["mean_linf"] > 0


ATTACK_FUNCTIONS = {"fgsm": fgsm, "pgd": pgd, "sign_noise": sign_noise, "uniform_noise": uniform_noise}


@pytest.mark.parametrize("option", group_options("attack"))
def test_clip_defaults_agree_everywhere(option):
    """One rule (attacks.py): the PGD family clips by default, FGSM and noise do not. The function default, the
    Attack dataclass, the schema and the conf/attack YAML agree for every attack."""
    composed = compose_job("train", [f"attack={option}"]).attack
    name = composed.name
    assert composed.clip == default_clip(name) == Attack(name=name, eps=0.1).clip == AttackConfig(name=name).clip
    if name in ATTACK_FUNCTIONS:
        assert inspect.signature(ATTACK_FUNCTIONS[name]).parameters["clip"].default == default_clip(name)
    assert default_clip(name) == (name in ("pgd", "autoattack"))


@pytest.mark.parametrize("option", group_options("regime"))
def test_regime_clip_defaults_follow_the_same_rule(option):
    composed = compose_job("train", [f"regime={option}"]).regime
    assert composed.clip == RegimeConfig(name=composed.name).clip == (composed.name == "pgd_adv")
