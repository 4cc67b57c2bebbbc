"""Training regimes on tiny synthetic batches: the alpha mix, batch norm per half, no gradient through the
perturbation, the regime's perturbation is the evaluation's `Attack`, and clipping needs a [0, 1] box."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from advx.attacks import Attack, fgsm, pgd, sign_noise
from advx.data import Dataset, Split
from advx.errors import ConfigError
from advx.models import build_model
from advx.runtime import Runtime, seed_everything
from advx.schema import LoopConfig, OptimConfig, RegimeConfig
from advx.train import fit, regime_loss

CPU = Runtime(torch.device("cpu"), "fp32", False, False)
REGIMES = {  # regime -> the same perturbation built from the attack functions directly
    "fgsm_adv": (dict(name="fgsm_adv", eps=0.3), lambda m, x, y: fgsm(m, x, y, eps=0.3)),
    "pgd_linf": (dict(name="pgd_adv", eps=0.3, steps=3, random_start=True),
                 lambda m, x, y: pgd(m, x, y, eps=0.3, steps=3, random_start=True, clip=True)),
    "pgd_l2": (dict(name="pgd_adv", eps=1.0, norm="l2", steps=3, step_size=0.4),
               lambda m, x, y: pgd(m, x, y, eps=1.0, norm="l2", steps=3, step_size=0.4, clip=True)),
}


def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).train()


def batch(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(n, 6, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def perturbed(craft, model, x, y) -> torch.Tensor:
    torch.manual_seed(7)  # the same random start as the regime's own call
    return craft(model, x, y).detach()


def bn_stats(model: nn.Module) -> list[torch.Tensor]:
    bn = model[1]
    return [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]


@pytest.mark.parametrize("kind", REGIMES)
def test_alpha_zero_trains_on_the_perturbed_batch_alone(kind):
    """Madry et al. / Ilyas et al.'s L2 recipe (alpha = 0): the clean batch never reaches batch norm."""
    fields, craft = REGIMES[kind]
    model, x, y = bn_net(), *batch()
    reference = copy.deepcopy(model)
    x_adv = perturbed(craft, reference, x, y)
    expected_logits = reference(x_adv)  # train mode: one forward of the perturbed batch only
    torch.manual_seed(7)
    loss, logits = regime_loss(model, x, y, RegimeConfig(alpha=0.0, **fields), "softmax")
    for after, expected in zip(bn_stats(model), bn_stats(reference), strict=True):
        assert torch.equal(after, expected)
    assert torch.allclose(logits, expected_logits, atol=1e-6)  # train_perturbed_error is measured on x_adv
    assert loss.item() == pytest.approx(F.cross_entropy(expected_logits, y).item(), abs=1e-6)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.9])
def test_alpha_mix_normalises_each_half_by_its_own_statistics(alpha):
    """Goodfellow et al. 2015, Sec. 6: alpha * J(x) + (1 - alpha) * J(x_adv), each forwarded on its own."""
    model, x, y = bn_net(), *batch()
    reference = copy.deepcopy(model)
    x_adv = fgsm(reference, x, y, eps=0.3)
    clean_logits, adv_logits = reference(x), reference(x_adv)
    expected = alpha * F.cross_entropy(clean_logits, y) + (1 - alpha) * F.cross_entropy(adv_logits, y)
    loss, logits = regime_loss(model, x, y, RegimeConfig(name="fgsm_adv", alpha=alpha, eps=0.3), "softmax")
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert torch.allclose(logits, clean_logits, atol=1e-6)  # the train_error metric sees the clean batch
    for after, expected_stat in zip(bn_stats(model), bn_stats(reference), strict=True):
        assert torch.allclose(after.float(), expected_stat.float())  # two updates, one per half, in that order


@pytest.mark.parametrize("kind", REGIMES)
def test_no_gradient_flows_through_the_perturbation(kind):
    """The parameter gradient equals the one with x_adv a constant input, and x_adv carries no graph."""
    fields, craft = REGIMES[kind]
    torch.manual_seed(0)
    model, (x, y) = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)), batch()
    x_adv = perturbed(craft, model, x, y)
    expected = 0.5 * F.cross_entropy(model(x), y) + 0.5 * F.cross_entropy(model(x_adv), y)
    expected_grads = torch.autograd.grad(expected, list(model.parameters()))

    inputs = []
    model.register_forward_pre_hook(lambda _module, args: inputs.append(args[0]))
    torch.manual_seed(7)
    loss, _ = regime_loss(model, x, y, RegimeConfig(alpha=0.5, **fields), "softmax")
    grads = torch.autograd.grad(loss, list(model.parameters()))
    for got, want in zip(grads, expected_grads, strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    assert inputs[-1].grad_fn is None and not inputs[-1].requires_grad  # the last forward: x_adv, detached


def test_the_regime_perturbation_is_the_evaluation_attack():
    """regime_attack builds the same Attack that `advx attack` evaluates; noise regimes map to the noise attacks."""
    from advx.train import regime_attack

    pgd_regime = RegimeConfig(name="pgd_adv", eps=0.5, norm="l2", steps=7, step_size=0.1, random_start=True)
    assert regime_attack(pgd_regime) == Attack(name="pgd", eps=0.5, norm="l2", steps=7, step_size=0.1,
                                               random_start=True, clip=True)
    assert regime_attack(RegimeConfig(name="fgsm_adv", eps=0.25)) == Attack(name="fgsm", eps=0.25, clip=False)
    for noise in ("sign", "uniform"):
        assert regime_attack(RegimeConfig(name="noise", noise=noise, eps=0.1)).name == f"{noise}_noise"
    assert regime_attack(pgd_regime, "fgsm").name == "fgsm"  # the early-stopping criterion, same eps and clip

    torch.manual_seed(0)
    model, (x, y) = nn.Sequential(nn.Linear(6, 3)), batch()
    torch.manual_seed(3)
    loss, _ = regime_loss(model, x, y, RegimeConfig(name="noise", noise="sign", eps=0.1, alpha=0.0), "softmax")
    torch.manual_seed(3)
    assert loss.item() == pytest.approx(F.cross_entropy(model(sign_noise(x, eps=0.1)), y).item(), abs=1e-6)


def tiny_dataset(boxed: bool = True) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (48, 1, 4, 4), generator=generator, dtype=torch.uint8)
    labels = torch.arange(48) % 3
    if not boxed:
        images = images.float() / 64 - 2  # whitened-looking floats with no [0, 1] box
    return Dataset("tiny", Split(images[:32], labels[:32], boxed), None, Split(images[32:], labels[32:], boxed), 3,
                   mean=[0.5], std=[0.25])


@pytest.mark.parametrize(("alpha", "key"), [(0.0, "train_perturbed_error"), (0.5, "train_error")])
def test_fit_names_the_training_error_by_what_it_was_measured_on(alpha, key):
    model = build_model("relu_mlp", (1, 4, 4), 3, [0.5], [0.25], width=8, depth=1)
    state = fit(model, tiny_dataset(), optim=OptimConfig(name="sgd", lr=0.1),
                regime=RegimeConfig(name="pgd_adv", alpha=alpha, eps=0.1, steps=2),
                loop=LoopConfig(epochs=1, batch_size=16), runtime=CPU, generator=seed_everything(0))
    other = {"train_error", "train_perturbed_error"} - {key}
    assert key in state.history[0] and not other & set(state.history[0])


def test_fit_refuses_to_clip_data_without_a_box():
    model = build_model("softmax", (1, 4, 4), 3, [0.0], [1.0])
    kwargs = dict(optim=OptimConfig(name="sgd", lr=0.1), loop=LoopConfig(epochs=1, batch_size=16), runtime=CPU,
                  generator=seed_everything(0))
    with pytest.raises(ConfigError, match="regime.clip=true clips to the \\[0, 1\\] box"):
        fit(model, tiny_dataset(boxed=False), regime=RegimeConfig(name="pgd_adv", eps=0.1), **kwargs)
    state = fit(model, tiny_dataset(boxed=False), regime=RegimeConfig(name="pgd_adv", eps=0.1, clip=False), **kwargs)
    assert state.epoch == 0


def test_eps_warm_up_trains_the_first_epochs_at_a_fraction_of_eps():
    def trained_weights(**regime) -> torch.Tensor:
        generator = seed_everything(0)
        model = build_model("relu_mlp", (1, 4, 4), 3, [0.5], [0.25], width=8, depth=1)
        fit(model, tiny_dataset(), optim=OptimConfig(name="sgd", lr=0.1),
            regime=RegimeConfig(name="pgd_adv", alpha=0.0, norm="l2", steps=2, **regime),
            loop=LoopConfig(epochs=1, batch_size=16), runtime=CPU, generator=generator)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    full = trained_weights(eps=0.9, step_size=0.3)
    third = trained_weights(eps=0.3, step_size=0.1)
    assert torch.equal(trained_weights(eps=0.9, step_size=0.3, eps_warmup_epochs=3), third)  # epoch 1 of 3
    assert torch.equal(trained_weights(eps=0.9, step_size=0.3, eps_warmup_epochs=1), full)  # a one-epoch ramp ends
    assert not torch.equal(full, third)


def test_the_lr_decay_saturates_at_its_epoch_not_at_the_run_s_end():
    """pylearn2's maxout recipe: lr decays linearly to 0.05x by epoch 250 (`optim.saturate_epochs`) whatever the
    run's length; without the key the decay is compressed to the run, ending at 0.05x on its last epoch."""
    def recorded_lr(**optim) -> list[float]:
        model = build_model("softmax", (1, 4, 4), 3, [0.5], [0.25])
        state = fit(model, tiny_dataset(), optim=OptimConfig(name="sgd", lr=0.1, schedule="linear",
                                                             lr_final_factor=0.05, **optim),
                    regime=RegimeConfig(name="standard"), loop=LoopConfig(epochs=3, batch_size=16), runtime=CPU,
                    generator=seed_everything(0))
        return [row["lr"] for row in state.history]

    assert recorded_lr() == pytest.approx([0.1, 0.0525, 0.005])
    assert recorded_lr(saturate_epochs=250) == pytest.approx([0.1 * (1 - 0.95 * e / 249) for e in range(3)])
    assert recorded_lr(saturate_epochs=2) == pytest.approx([0.1, 0.005, 0.005])


def test_with_a_validation_split_the_epochs_record_no_test_error():
    """Early stopping and any recipe choice see validation error only; the test set is scored once, by the caller."""
    data = tiny_dataset()
    held_out = dataclasses.replace(data, train=Split(data.train.images[:24], data.train.labels[:24], True),
                                   val=Split(data.train.images[24:], data.train.labels[24:], True))
    for dataset, recorded, absent in ((data, "test_error", "val_error"), (held_out, "val_error", "test_error")):
        model = build_model("softmax", (1, 4, 4), 3, [0.5], [0.25])
        state = fit(model, dataset, optim=OptimConfig(name="sgd", lr=0.1), regime=RegimeConfig(name="standard"),
                    loop=LoopConfig(epochs=2, batch_size=8, patience=1), runtime=CPU, generator=seed_everything(0))
        assert all(recorded in row and absent not in row for row in state.history)
