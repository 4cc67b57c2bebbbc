"""AutoAttack (advx.autoattack) on a small trained model: APGD-CE against torchattacks' APGD, the suite's active set,
its sanity checks (never weaker than APGD-CE, falls with eps, stays in the ball and the box), Square without
gradients, and the Attack / attack_metrics / config / CLI paths."""

from __future__ import annotations

import pytest
import torch

from advx import autoattack as aa
from advx.attacks import Attack
from advx.errors import ConfigError
from advx.evaluate import attack_metrics
from advx.hydra_bridge import compose_job
from advx.models import build_model
from advx.runtime import Runtime
from advx.schema import AUTOATTACK_COMPONENTS, AttackConfig
from conftest import TINY, metrics

CPU = Runtime.from_config(device="cpu", progress=False)
FAST = dict(steps=10, targets=2, square_queries=50)  # a cheap suite where the standard budget is not the point


def robust(found: aa.Found, model, x, y) -> float:
    return ((model(x).argmax(1) == y) & ~found.fooled).float().mean().item()


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.05), ("l2", 1.0)])
def test_apgd_ce_agrees_with_torchattacks(trained, norm, eps):
    """Robust accuracy of our APGD-CE within 1 point of torchattacks' APGD (a port of the authors' code) at a
    radius that leaves about half the examples robust, 100 iterations, one restart."""
    torchattacks = pytest.importorskip(
        "torchattacks", reason="torchattacks is not installed (an optional dependency: `make bench-deps`)")
    model, _, x, y = trained
    torch.manual_seed(0)
    ours = robust(aa.apgd(model, x, y, eps=eps, norm=norm, steps=100), model, x, y)
    reference = torchattacks.APGD(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, steps=100, n_restarts=1,
                                  loss="ce", seed=0)
    theirs = (model(reference(x, y)).argmax(1) == y).float().mean().item()
    assert 0.2 < theirs < 0.8  # the radius decides something
    assert abs(ours - theirs) <= 0.01, (ours, theirs)


def test_checkpoints_follow_the_paper():
    assert aa.checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert aa.checkpoints(10)[:2] == [2, 3] and aa.checkpoints(0) == []


def test_the_suite_is_never_weaker_than_apgd_ce_alone(trained):
    model, _, x, y = trained
    torch.manual_seed(1)
    alone = robust(aa.apgd(model, x, y, eps=0.05, steps=20), model, x, y)
    torch.manual_seed(1)  # the suite's first run is the same APGD-CE run
    suite = aa.autoattack(model, x, y, eps=0.05, steps=20, targets=3, square_queries=100)
    assert list(suite.robust_after) == list(aa.COMPONENTS) == list(AUTOATTACK_COMPONENTS)
    assert suite.robust_after["apgd-ce"] == round(alone * len(y))
    assert suite.robust_after["square"] <= suite.robust_after["apgd-t"] <= suite.robust_after["apgd-ce"]
    assert suite.robust_after["apgd-t"] < suite.robust_after["apgd-ce"]  # the targeted runs find more
    assert torch.equal(suite.logits.argmax(1), model(suite.x_adv).argmax(1))  # the logits are those at x_adv


def test_robust_accuracy_falls_with_eps_to_zero(trained):
    model, data, _, _ = trained
    accuracies = []
    for eps in (0.0, 0.03, 0.05, 0.1, 0.3):
        torch.manual_seed(0)
        row = attack_metrics(model, data.test, Attack(name="autoattack", eps=eps, **FAST), CPU)
        accuracies.append(1 - row["adv_error"])
    assert all(later <= earlier for earlier, later in zip(accuracies, accuracies[1:], strict=False)), accuracies
    assert accuracies[0] > 0.9 and accuracies[-1] < 0.01


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.05), ("l2", 1.0)])
def test_every_component_stays_in_the_ball_and_the_box(trained, norm, eps):
    model, _, x, y = trained
    x, y = x[:64], y[:64]
    torch.manual_seed(2)
    found = [aa.apgd(model, x, y, eps=eps, norm=norm, steps=10),
             aa.apgd(model, x, y, eps=eps, norm=norm, steps=10, target=(y + 1) % 10),
             aa.square(model, x, y, eps=eps, norm=norm, queries=100),
             aa.autoattack(model, x, y, eps=eps, norm=norm, **FAST)]
    for result in found:
        delta = (result.x_adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert size.max() <= eps + 1e-6
        assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    fooled = found[0].fooled
    assert torch.equal(model(found[0].x_adv).argmax(1) != y, fooled)  # x_adv is the point counted


class Counter(torch.nn.Module):
    """The model, counting the examples its forward passes see."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, 0

    def forward(self, x):
        self.seen += len(x)
        return self.model(x)


def test_components_attack_only_the_examples_still_robust(trained, monkeypatch):
    """Each run gets exactly the examples that are clean-correct and unfooled by every earlier run; the model sees
    the clean batch once plus the evaluations reported, so no run works on a fooled example either."""
    model, _, x, y = trained
    calls = []
    for name in ("apgd", "square"):
        original = getattr(aa, name)

        def record(model, xs, ys, *args, _original=original, _name=name, **kwargs):
            found = _original(model, xs, ys, *args, **kwargs)
            rows = (xs.flatten(1)[:, None] == x.flatten(1)[None]).all(2).float().argmax(1)  # which examples
            calls.append((_name, rows, found.fooled))
            return found

        monkeypatch.setattr(aa, name, record)
    counter = Counter(model)
    torch.manual_seed(3)
    suite = aa.autoattack(counter, x, y, eps=0.05, steps=10, targets=3, square_queries=200)
    alive = model(x).argmax(1) == y
    for _, rows, fooled in calls:
        assert torch.equal(rows.sort().values, alive.nonzero().squeeze(1))
        alive[rows[fooled]] = False
    assert [name for name, _, _ in calls] == ["apgd"] * 4 + ["square"]  # apgd-ce, apgd-t x 3 targets, square
    assert torch.equal(alive, suite.logits.argmax(1) == y)
    assert int(alive.sum()) == suite.robust_after["square"]
    assert counter.seen == len(x) + suite.evaluations
    assert suite.evaluations < len(x) * (4 * 11 + 200)  # fooled examples cost nothing further


class NoGradient(torch.nn.Module):
    """The model behind a zero gradient: the forward pass is unchanged, the input gradient is exactly 0."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.detach() + 0 * x)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 2.0)])
def test_square_needs_no_gradient(trained, norm, eps):
    model, _, x, y = trained
    masked = NoGradient(model)
    x, y = x[:100], y[:100]
    torch.manual_seed(4)
    gradient = robust(aa.apgd(masked, x, y, eps=eps, norm=norm, steps=10), model, x, y)
    scores = robust(aa.square(masked, x, y, eps=eps, norm=norm, queries=300), model, x, y)
    assert scores < gradient - 0.3, (scores, gradient)


def test_attack_evaluate_reports_components_and_transfer(trained):
    model, data, x, y = trained
    attack = Attack(name="autoattack", eps=0.05, **FAST)
    assert attack.clip and attack.components == aa.COMPONENTS and Attack(name="autoattack", eps=0.1).steps == 100
    torch.manual_seed(5)
    row = attack_metrics(model, data.test, attack, CPU, batch_size=100)
    assert [k for k in row if k.startswith("acc_after_")] == [f"acc_after_{c}" for c in aa.COMPONENTS]
    assert row["acc_after_square"] == pytest.approx(1 - row["adv_error"])
    assert row["acc_after_apgd-ce"] >= row["acc_after_apgd-t"] >= row["acc_after_square"]
    assert 0 < row["steps_per_example"] < 10 * 3 + 50
    torch.manual_seed(6)
    source = build_model("cnn", data.input_shape, data.num_classes, data.mean, data.std, channels=[4], hidden=8)
    moved = attack.evaluate(model, x, y, source=source.eval())
    assert moved.robust_after is None and moved.example_steps > 0
    assert torch.equal(moved.logits.argmax(1), model(moved.x_adv).argmax(1))  # scored on the model
    assert attack(model, x[:8], y[:8]).shape == x[:8].shape  # the call shape returns x_adv


def test_config_defaults_are_the_standard_version():
    attack = compose_job("attack", ["attack=autoattack", "run=somewhere"]).attack
    assert (attack.name, attack.steps, attack.restarts, attack.targets, attack.square_queries, attack.clip) == \
        ("autoattack", 100, 1, 9, 5000, True)
    assert list(attack.components) == list(aa.COMPONENTS)
    assert compose_job("attack", ["attack=autoattack", "run=x", "attack.norm=l2", "attack.eps=[1.0,2.0]",
                                  "attack.components=[apgd-ce,square]"]).attack.eps == [1.0, 2.0]
    with pytest.raises(ConfigError, match="attack.components='fab-t' is not valid"):
        AttackConfig(name="autoattack", components=["apgd-ce", "fab-t"])
    with pytest.raises(ConfigError, match="untargeted"):
        AttackConfig(name="autoattack", targeted=True)
    with pytest.raises(ConfigError, match="step_size=null"):
        AttackConfig(name="autoattack", step_size=0.1)


def test_apgd_t_refuses_fewer_than_four_classes():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="at least 4 classes"):
        aa.autoattack(model, x, y, eps=0.1, components=["apgd-t"])


def test_cli_runs_autoattack_in_l2(advx, workdir):
    run, out = workdir / "cnn", workdir / "attack"
    trained = advx("train", *TINY, "model=cnn", "model.channels=[4]", "model.hidden=8", "train.epochs=1",
                   f"hydra.run.dir={run}")
    assert trained.exit_code == 0, trained.output
    result = advx("attack", f"run={run}", "attack=autoattack", "attack.norm=l2", "attack.eps=[1.0,2.0]",
                  "attack.steps=5", "attack.targets=2", "attack.square_queries=20", "num_examples=32",
                  "runtime.progress=false", f"hydra.run.dir={out}")
    assert result.exit_code == 0, result.output
    rows = metrics(out)["attacks"]
    assert [r["eps"] for r in rows] == [1.0, 2.0]
    assert all(r["mean_l2"] <= r["eps"] + 1e-6 and "acc_after_apgd-t" in r for r in rows)
    assert rows[1]["adv_error"] >= rows[0]["adv_error"]
    assert "acc_after_square" in result.output
