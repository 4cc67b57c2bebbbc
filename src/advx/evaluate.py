"""Evaluation: clean and adversarial error rates and confidences of a model on a split.

Rates are fractions in [0, 1]. Confidence is the probability the model gives its predicted class (for sigmoid
and RBF outputs the independent per-class probability). Goodfellow et al. (2015) report the adversarial error
with the mean confidence on misclassified examples; both are here, with the overall mean too.

Every function runs the model under `runtime.eval_mode` (eval mode, no parameter gradients) and leaves it in
the mode it was given: batch-norm statistics are never updated by an evaluation.
"""

from __future__ import annotations

import torch

from advx.attacks import Attack
from advx.data import Split, require_box
from advx.models import probabilities
from advx.progress import Bars
from advx.runtime import Runtime, eval_mode


@torch.no_grad()
def error_rate(model: torch.nn.Module, split: Split, runtime: Runtime, batch_size: int = 1000) -> float:
    """Fraction of `split` the model misclassifies, in [0, 1] (eval mode; the caller's mode restored)."""
    wrong = torch.zeros((), device=split.labels.device)
    with eval_mode(model):
        for x, y in split.batches(batch_size):
            with runtime.autocast():
                wrong += (model(x).argmax(1) != y).sum()
    return wrong.item() / max(len(split), 1)


def attack_metrics(model: torch.nn.Module, split: Split, attack: Attack, runtime: Runtime, *,
                   source: torch.nn.Module | None = None, batch_size: int = 1000, bars: Bars | None = None,
                   ) -> dict[str, float]:
    """Clean and adversarial metrics of `model` on `split` under `attack` (crafted on `source` if given).

    Returns fractions: clean_error, adv_error, adv_confidence (mean over all examples),
    adv_confidence_wrong (mean over misclassified adversarial examples), clean_confidence, perturbation
    sizes linf / l2 (means over examples) and steps_per_example (the gradient steps the attack took). Untargeted
    PGD on the model itself counts an example as fooled at its first fooling iterate and stops attacking it
    (`Attack.evaluate`: best-iterate rule, active set). AutoAttack on the model itself adds
    `acc_after_<component>`, the robust accuracy after each of its components in the order they ran (the last
    is 1 - adv_error), and counts forward passes as its steps. The model runs in eval mode; its mode is restored.
    Raises ConfigError when the attack clips (`attack.clip`) on a split without a [0, 1] box.
    """
    require_box(attack.clip, split, "attack.clip")
    with eval_mode(model):
        sums = _attack_sums(model, split, attack, runtime, source, batch_size, bars)
    values = {k: v.item() for k, v in sums.items()}
    n = max(len(split), 1)
    after = {f"acc_after_{k.removeprefix('robust_after:')}": v / n for k, v in values.items()
             if k.startswith("robust_after:")}
    return {
        "eps": attack.eps,
        "clean_error": values["clean_wrong"] / n,
        "adv_error": values["adv_wrong"] / n,
        "adv_confidence": values["adv_conf"] / n,
        "adv_confidence_wrong": values["adv_conf_wrong"] / max(values["adv_wrong"], 1),
        "clean_confidence": values["clean_conf"] / n,
        "mean_linf": values["linf"] / n,
        "mean_l2": values["l2"] / n,
        "steps_per_example": values["example_steps"] / n,  # gradient steps the attack took, per example
        **after,
    }


def _attack_sums(model, split, attack, runtime, source, batch_size, bars) -> dict[str, torch.Tensor]:
    output = getattr(model, "output", "softmax")
    sums = {k: torch.zeros((), device=split.labels.device) for k in
            ("clean_wrong", "adv_wrong", "clean_conf", "adv_conf", "adv_conf_wrong", "linf", "l2")}
    batches = split.batches(batch_size)
    if bars is not None:
        batches = bars.inner(batches, f"{attack.name} eps={attack.eps:g}", -(-len(split) // batch_size))
    example_steps = 0
    for x, y in batches:
        with runtime.autocast():
            outcome = attack.evaluate(model, x, y, source)
        example_steps += outcome.example_steps
        for component, robust in (outcome.robust_after or {}).items():
            key = f"robust_after:{component}"
            sums[key] = sums.get(key, torch.zeros((), device=split.labels.device)) + robust
        with torch.no_grad():
            clean_p = probabilities(outcome.clean_logits.float(), output)
            adv_conf, adv_pred = probabilities(outcome.logits.float(), output).max(1)
            adv_wrong = adv_pred != y
            sums["clean_wrong"] += (clean_p.argmax(1) != y).sum()
            sums["clean_conf"] += clean_p.max(1).values.sum()
            sums["adv_wrong"] += adv_wrong.sum()
            sums["adv_conf"] += adv_conf.sum()
            sums["adv_conf_wrong"] += (adv_conf * adv_wrong).sum()
            delta = (outcome.x_adv - x).flatten(1).float()
            sums["linf"] += delta.abs().amax(1).sum()
            sums["l2"] += delta.norm(dim=1).sum()
    sums["example_steps"] = torch.tensor(float(example_steps))
    return sums
