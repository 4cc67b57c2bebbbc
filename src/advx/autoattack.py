"""AutoAttack (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks"), written for advx: APGD-CE, APGD-T and Square in the Linf and L2 balls.

Inputs x [B, C, H, W] live in [0, 1] (every point is clipped to the box when `clip`); labels y [B] are the true
classes. The suite (`autoattack`) runs its components in order on the active set: the examples the model still
classifies correctly. An example fooled by a component is never attacked again, and robust accuracy is the
fraction of examples that no component fooled (a clean mistake counts as fooled from the start).

Components of the standard version, with its settings:
- `apgd-ce`: Auto-PGD (Sec. 3 of the paper) on the cross-entropy (the model's own training loss): 100
  iterations from a random point of the ball's surface, first step 2 * eps, heavy-ball momentum 0.75, and a step
  size halved at the checkpoints w_j (after 22, 41, 57, 70, 80, 87, 93 and 99 of 100 iterations) where fewer
  than 75% of the steps since the last checkpoint raised the loss, or where the step was not halved last time and
  the best loss has not improved since; a halving restarts from the highest-loss point. Each example keeps its
  highest-loss point, and counts as fooled at its first fooling iterate.
- `apgd-t`: the same APGD ascending the targeted DLR loss -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) towards
  each of the 9 classes ranked highest after the true one by the clean logits (min(9, C - 1); the loss needs
  C >= 4), 100 iterations per target class, the still-robust examples only.
- `square`: the Square attack (Andriushchenko et al. 2020), score-based (no gradients): random square windows
  (Linf: a +-eps value per channel; L2: a pseudo-Gaussian bump that takes the mass of a second window), kept
  when they lower the margin z_y - max_{j != y} z_j; window area p_init = 0.8 of the image, halved after
  iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 (AutoAttack's unrescaled schedule); at most 5000
  queries per example, the initial stripes (Linf) or grid of bumps (L2) included.

Deviations from the reference code (fra31/auto-attack), stated honestly:
- FAB-T is left out: the standard version runs APGD-CE, APGD-T, FAB-T, Square, but Croce & Hein report that
  FAB-T rarely fools a point that APGD-T left robust (its added robust-accuracy drop is 0 to 0.1 points in their
  tables). The suite that ran is the `components` key, recorded in every run's config.
- Square draws a window position and sign per example (the reference draws one per batch), and flips the sign of
  a proposal that would leave the window unchanged after clipping (the reference draws again); its budget counts
  the initial query (at most `queries` forward passes, the reference 1 + `queries`).
- APGD drops an example from its batch at its first fooling iterate (the reference runs all 100 iterations for
  all); every example's trajectory is its own, so the robust accuracy is the same and the cost lower. Its
  condition 1 counts loss rises strictly below rho times the checkpoint interval, as the paper states.
- An example no component fooled keeps x_adv = x (as the reference does); its logits are the clean ones.

Cost: `evaluations` counts forward passes over single examples: one forward+backward per APGD iterate (the last
iterate needs no backward) and one forward per Square query; the clean forward pass is not counted.
Randomness comes from torch's global RNG (the callers seed it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch

from advx.models import per_example_loss
from advx.runtime import eval_mode

COMPONENTS = ("apgd-ce", "apgd-t", "square")  # the standard version's order, FAB-T left out (see above)
MOMENTUM = 0.75  # alpha of APGD's heavy-ball step (Croce & Hein 2020, Sec. 3.2)
RHO = 0.75  # APGD halves its step when fewer than rho of the steps since the last checkpoint raised the loss
P_INIT = 0.8  # Square's initial window area as a fraction of the image (AutoAttack's setting)
SQUARE_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # iterations after which p halves


class Found(NamedTuple):
    """What one component run found for n examples."""

    x_adv: torch.Tensor  # [n, ...] the first fooling point, else the best point found (highest loss, lowest margin)
    logits: torch.Tensor  # [n, C] the model's logits at x_adv, from the run's own forward pass
    fooled: torch.Tensor  # [n] bool: x_adv is misclassified
    evaluations: int  # forward passes over single examples (APGD: with a backward pass)


@dataclass(frozen=True)
class SuiteResult:
    """The suite's result for B examples."""

    x_adv: torch.Tensor  # [B, ...] the fooling point of the component that fooled it, else x
    logits: torch.Tensor  # [B, C] the model's logits at x_adv
    clean_logits: torch.Tensor  # [B, C] the model's logits at x
    evaluations: int  # forward(+backward) passes over single examples, summed over components
    robust_after: dict[str, int]  # examples still robust (and clean-correct) after each component, in order


def _view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-example [n] tensor shaped [n, 1, ..., 1] to broadcast against `like`."""
    return t.view(-1, *([1] * (like.dim() - 1)))


def _l2(t: torch.Tensor) -> torch.Tensor:
    return _view(t.flatten(1).norm(dim=1), t)


def _project(x: torch.Tensor, point: torch.Tensor, eps: float, norm: str, clip: bool) -> torch.Tensor:
    """`point` projected onto the eps ball around x, then clipped to [0, 1] (when `clip`)."""
    delta = point - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * (eps / _l2(delta).clamp_min(1e-12)).clamp(max=1.0)
    return (x + delta).clamp(0, 1) if clip else x + delta


def _ascent(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit size in the norm: sign (Linf) or normalised gradient (L2)."""
    return grad.sign() if norm == "linf" else grad / _l2(grad).clamp_min(1e-12)


def _surface_start(x: torch.Tensor, eps: float, norm: str, clip: bool) -> torch.Tensor:
    """APGD's start: x plus a random point of the eps sphere of the norm, clipped to the box."""
    if norm == "linf":
        direction = 2 * torch.rand_like(x) - 1
        direction = direction / _view(direction.flatten(1).abs().amax(1), x).clamp_min(1e-12)
    else:
        direction = torch.randn_like(x)
        direction = direction / _l2(direction).clamp_min(1e-12)
    start = x + eps * direction
    return start.clamp(0, 1) if clip else start


def targeted_dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted difference-of-logits-ratio loss [n] (Croce & Hein 2020, Eq. 7), ascended towards `target`:
    -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), pi sorting the logits [n, C >= 4] in decreasing order."""
    logits = logits.float()
    top = logits.topk(4, dim=1).values
    gap = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, target[:, None]).squeeze(1)
    return -gap / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def checkpoints(steps: int) -> list[int]:
    """APGD's checkpoints (iterations after which the step size may halve): p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), in whole iterations as the reference rounds them."""
    interval, shrink, floor = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks = []
    while (marks[-1] if marks else 0) + interval <= steps:
        marks.append((marks[-1] if marks else 0) + interval)
        interval = max(interval - shrink, floor)
    return marks


def apgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
         steps: int = 100, target: torch.Tensor | None = None, clip: bool = True) -> Found:
    """Auto-PGD (Croce & Hein 2020, Algorithm 1) in the Linf or L2 ball of radius eps around x, one run.

    x: [n, ...] inputs; y: [n] true labels. Ascends the model's own loss (cross-entropy for softmax outputs), or
    the targeted DLR loss towards `target` [n] when given; `steps` iterations after the random start. The model
    must be in eval mode (the suite sets it). Returns, per example, the first fooling iterate or else the
    highest-loss one.
    """
    output = getattr(model, "output", "softmax")
    x, n = x.detach(), x.shape[0]
    marks = set(checkpoints(steps))

    def evaluate(point: torch.Tensor, s: dict, backward: bool):
        point = point.detach().requires_grad_(backward)
        with torch.set_grad_enabled(backward):
            logits = model(point)
            loss = per_example_loss(logits, s["y"], output) if target is None else \
                targeted_dlr(logits, s["y"], s["target"])
        grad = torch.autograd.grad(loss.sum(), point)[0].detach() if backward else None
        return logits.detach(), loss.detach().float(), grad

    s = {"x": x, "y": y, "index": torch.arange(n, device=x.device)}
    if target is not None:
        s["target"] = target
    start = _surface_start(x, eps, norm, clip)
    logits, loss, grad = evaluate(start, s, backward=steps > 0)
    evaluations = n
    x_out, logits_out = start.detach().clone(), logits.clone()
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    grad = torch.zeros_like(x) if grad is None else grad
    s.update(point=start.detach(), previous=start.detach(), grad=grad, loss=loss, best=start.detach(),
             best_grad=grad, best_loss=loss, best_logits=logits,
             step=torch.full((n,), 2.0 * eps, device=x.device),  # eta^(0) = 2 eps, both norms (Sec. 3.2)
             rises=torch.zeros(n, device=x.device), loss_at_check=loss,
             halved=torch.ones_like(fooled))  # condition 2 waits for the second checkpoint, as the reference
    last_mark, new = 0, start.detach()
    for i in range(steps + 1):
        if i > 0:  # the i-th iterate: a step from the current point, with momentum after the first
            alpha = 1.0 if i == 1 else MOMENTUM
            with torch.no_grad():
                p = s["point"]
                z = _project(s["x"], p + _view(s["step"], p) * _ascent(s["grad"], norm), eps, norm, clip)
                new = _project(s["x"], p + alpha * (z - p) + (1 - alpha) * (p - s["previous"]), eps, norm, clip)
            logits, loss, grad = evaluate(new, s, backward=i < steps)
            evaluations += len(new)
            grad = s["grad"] if grad is None else grad
            better = loss > s["best_loss"]
            s["rises"] = s["rises"] + (loss > s["loss"]).float()
            s["best"] = torch.where(_view(better, new), new, s["best"])
            s["best_grad"] = torch.where(_view(better, new), grad, s["best_grad"])
            s["best_logits"] = torch.where(better[:, None], logits, s["best_logits"])
            s["best_loss"] = torch.where(better, loss, s["best_loss"])
            s["previous"], s["point"], s["grad"], s["loss"] = p, new, grad, loss
            if i in marks:  # a checkpoint: halve the step where the loss stalled, restarting from the best point
                interval, last_mark = i - last_mark, i
                halve = (s["rises"] < RHO * interval) | (~s["halved"] & (s["best_loss"] <= s["loss_at_check"]))
                s["step"] = torch.where(halve, s["step"] / 2, s["step"])
                s["point"] = torch.where(_view(halve, new), s["best"], s["point"])
                s["grad"] = torch.where(_view(halve, new), s["best_grad"], s["grad"])
                s["loss"] = torch.where(halve, s["best_loss"], s["loss"])
                s["halved"], s["loss_at_check"], s["rises"] = halve, s["best_loss"], torch.zeros_like(s["rises"])
        success = logits.argmax(1) != s["y"]
        if bool(success.any()):  # first fooling iterate: record it and drop the example
            hit = s["index"][success]
            x_out[hit], logits_out[hit], fooled[hit] = new[success], logits[success], True
            s, new = {k: v[~success] for k, v in s.items()}, new[~success]
        if s["index"].numel() == 0:
            break
    x_out[s["index"]], logits_out[s["index"]] = s["best"], s["best_logits"]
    return Found(x_out, logits_out, fooled, evaluations)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j per example [n]: negative when the model is fooled."""
    logits = logits.float()
    others = logits.scatter(1, y[:, None], -torch.inf)
    return logits.gather(1, y[:, None]).squeeze(1) - others.amax(1)


def _rings(rows: int, cols: int) -> torch.Tensor:
    """A [rows, cols] bump: each pixel sums 1/(k+1)^2 over the concentric rectangles k >= r that contain it, r its
    Chebyshev distance from the centre (Andriushchenko et al. 2020, Sec. 3.2)."""
    r = torch.maximum((torch.arange(rows) - rows // 2).abs()[:, None], (torch.arange(cols) - cols // 2).abs()[None])
    weights = 1.0 / (torch.arange(max(rows // 2, cols // 2) + 1) + 1.0) ** 2
    tails = weights.flip(0).cumsum(0).flip(0)  # tails[r] = sum_{k >= r} weights[k]
    return tails[r]


def pseudo_gaussian(side: int) -> torch.Tensor:
    """Square's L2 update shape [side, side]: a positive bump over a negative one, unit L2 norm."""
    bump = torch.cat([_rings(side // 2, side), -_rings(side - side // 2, side)])
    return bump / bump.norm().clamp_min(1e-12)


def _corners(n: int, side: int, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A uniformly random top-left corner per example for a side x side window inside h x w."""
    return (torch.randint(0, h - side + 1, (n,), device=device), torch.randint(0, w - side + 1, (n,), device=device))


def _window(corner: tuple[torch.Tensor, torch.Tensor], side: int, h: int, w: int) -> torch.Tensor:
    """[n, 1, h, w] bool masks of each example's window."""
    top, left = corner
    rows = torch.arange(h, device=top.device)[None]
    cols = torch.arange(w, device=top.device)[None]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _place(patterns: torch.Tensor, corner: tuple[torch.Tensor, torch.Tensor], h: int, w: int) -> torch.Tensor:
    """[n, 1, h, w] canvases holding each example's [side, side] pattern at its window, zero elsewhere."""
    top, left = corner
    n, side = patterns.shape[0], patterns.shape[1]
    offsets = torch.arange(side, device=top.device)
    canvas = patterns.new_zeros(n, h, w)
    canvas[torch.arange(n, device=top.device)[:, None, None], (top[:, None] + offsets)[:, :, None],
           (left[:, None] + offsets)[:, None, :]] = patterns
    return canvas[:, None]


def _bumps(side: int, n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """n pseudo-Gaussian bumps [n, side, side], each transposed with probability 1/2."""
    bump = pseudo_gaussian(side).to(device, dtype)
    flip = torch.rand(n, device=device) < 0.5
    return torch.where(flip[:, None, None], bump.T, bump)


def _signs(n: int, c: int, like: torch.Tensor) -> torch.Tensor:
    return torch.randint(0, 2, (n, c, 1, 1), device=like.device).to(like.dtype) * 2 - 1


def _square_start(x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Square's initial perturbation: vertical stripes of +-eps (Linf), or a grid of +-bumps of norm eps (L2)."""
    n, c, h, w = x.shape
    if norm == "linf":
        return eps * _signs(n, c * w, x).view(n, c, 1, w)
    side = max(min(h, w) // 5, 1)
    delta = torch.zeros_like(x)
    rows, cols = h // side, w // side
    top0, left0 = (h - rows * side) // 2, (w - cols * side) // 2
    for i in range(rows):
        for j in range(cols):
            bump = pseudo_gaussian(side).to(x.device, x.dtype)
            bump = bump.T if bool(torch.rand(()) < 0.5) else bump
            top, left = top0 + i * side, left0 + j * side
            delta[:, :, top:top + side, left:left + side] += bump * _signs(n, c, x)
    return delta * eps / _l2(delta).clamp_min(1e-12)


def _square_proposal(x: torch.Tensor, best: torch.Tensor, eps: float, norm: str, p: float, clip: bool):
    """One random-window proposal per example (Andriushchenko et al. 2020, Algorithms 2 and 3)."""
    n, c, h, w = x.shape
    box = (lambda t: t.clamp(0, 1)) if clip else (lambda t: t)
    if norm == "linf":
        side = min(max(round(math.sqrt(p * h * w)), 1), h, w)
        window = _window(_corners(n, side, h, w, x.device), side, h, w)
        signs = _signs(n, c, x)
        proposal = torch.where(window, box(x + eps * signs), best)
        unchanged = ((proposal - best).abs() * window).flatten(1).amax(1) < 1e-7
        flipped = torch.where(window, box(x - eps * signs), best)  # the other sign always changes the window
        return torch.where(_view(unchanged, x), flipped, proposal)
    side = max(round(math.sqrt(p * h * w)), 3)
    side = min(side + 1 - side % 2, h, w)  # odd, so the bump has a centre pixel
    delta = best - x
    first = _corners(n, side, h, w, x.device)
    window = _window(first, side, h, w)
    both = window | _window(_corners(n, side, h, w, x.device), side, h, w)
    per_channel = (2, 3)
    in_window = (delta * window).square().sum(per_channel, keepdim=True).sqrt()  # [n, c, 1, 1]
    in_both = (delta * both).square().sum(per_channel, keepdim=True).sqrt()
    direction = _place(_bumps(side, n, x.device, x.dtype), first, h, w) * _signs(n, c, x)
    direction = direction + delta * window / (in_window + 1e-12)
    direction = direction / (direction.square().sum(per_channel, keepdim=True).sqrt() + 1e-12)
    # the window takes the mass both windows held, plus an even share of the budget left in the ball
    budget = ((eps**2 - _l2(delta).square()).clamp_min(0) / c + in_both.square()).sqrt()
    delta = delta * ~both + direction * budget
    return box(x + delta * eps / _l2(delta).clamp_min(1e-12))


def square(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
           queries: int = 5000, p_init: float = P_INIT, clip: bool = True) -> Found:
    """The Square attack (Andriushchenko et al. 2020), untargeted, one run: random search on the margin loss.

    x: [n, C, H, W] images; y: [n] true labels. Uses only the model's logits (no gradients); at most `queries`
    forward passes per example, the initial one included; an example stops at its first fooling proposal.
    Returns, per example, that proposal or else the lowest-margin point.
    """
    if x.dim() != 4:
        raise ValueError(f"square attacks images [B, C, H, W]; got inputs of shape {tuple(x.shape)}")
    x, n = x.detach(), x.shape[0]
    with torch.no_grad():
        start = x + _square_start(x, eps, norm)
        start = start.clamp(0, 1) if clip else start
        logits = model(start)
        x_out, logits_out = start.clone(), logits.clone()
        fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
        s = {"x": x, "y": y, "index": torch.arange(n, device=x.device), "best": start, "logits": logits,
             "margin": margin(logits, y)}
        evaluations = n
        for i in range(queries):
            success = s["logits"].argmax(1) != s["y"]
            if bool(success.any()):
                hit = s["index"][success]
                x_out[hit], logits_out[hit], fooled[hit] = s["best"][success], s["logits"][success], True
                s = {k: v[~success] for k, v in s.items()}
            if s["index"].numel() == 0 or i == queries - 1:
                break
            p = p_init / 2 ** sum(i > t for t in SQUARE_HALVINGS)
            proposal = _square_proposal(s["x"], s["best"], eps, norm, p, clip)
            logits = model(proposal)
            evaluations += len(proposal)
            value = margin(logits, s["y"])
            better = value < s["margin"]
            s["best"] = torch.where(_view(better, proposal), proposal, s["best"])
            s["logits"] = torch.where(better[:, None], logits, s["logits"])
            s["margin"] = torch.where(better, value, s["margin"])
        x_out[s["index"]], logits_out[s["index"]] = s["best"], s["logits"]
    return Found(x_out, logits_out, fooled, evaluations)


Run = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], Found]


def _runs(name: str, *, eps: float, norm: str, steps: int, restarts: int, targets: int, square_queries: int,
          clip: bool, num_classes: int) -> list[Run]:
    """The runs a component makes, in order, each on the examples still robust: (model, x, y, ranked) -> Found,
    `ranked` [n, C] the classes sorted by clean logit, highest first."""
    if name == "apgd-ce":
        run = partial(apgd, eps=eps, norm=norm, steps=steps, clip=clip)
        return [lambda m, x, y, _ranked: run(m, x, y)] * restarts
    if name == "apgd-t":
        if num_classes < 4:
            raise ValueError(f"apgd-t's targeted DLR loss needs at least 4 classes, the model has {num_classes}; "
                             f"leave it out of attack.components")
        run = partial(apgd, eps=eps, norm=norm, steps=steps, clip=clip)
        return [partial(lambda m, x, y, ranked, rank: run(m, x, y, target=ranked[:, rank]), rank=rank)
                for rank in range(1, min(targets, num_classes - 1) + 1) for _ in range(restarts)]
    if name == "square":
        run = partial(square, eps=eps, norm=norm, queries=square_queries, clip=clip)
        return [lambda m, x, y, _ranked: run(m, x, y)] * restarts
    raise ValueError(f"unknown AutoAttack component {name!r}; choose from {', '.join(COMPONENTS)}")


def autoattack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
               components: Sequence[str] = COMPONENTS, steps: int = 100, restarts: int = 1, targets: int = 9,
               square_queries: int = 5000, clip: bool = True) -> SuiteResult:
    """The AutoAttack suite (Croce & Hein 2020) on x [B, C, H, W] in [0, 1] with true labels y [B].

    Runs `components` in order (standard: apgd-ce, apgd-t, square), each `restarts` times (apgd-t: per target
    class) on the examples still correctly classified; `steps` APGD iterations per run, `targets` target classes
    for apgd-t, `square_queries` queries per Square run. The model runs in eval mode; its mode is restored.
    """
    x = x.detach()
    with eval_mode(model):
        with torch.no_grad():
            clean_logits = model(x)
        x_adv, logits = x.clone(), clean_logits.clone()
        robust = clean_logits.argmax(1) == y
        ranked = clean_logits.argsort(1, descending=True)
        evaluations, robust_after = 0, {}
        for name in components:
            for run in _runs(name, eps=eps, norm=norm, steps=steps, restarts=restarts, targets=targets,
                             square_queries=square_queries, clip=clip, num_classes=clean_logits.shape[1]):
                active = robust.nonzero().squeeze(1)
                if active.numel() == 0:
                    break
                found = run(model, x[active], y[active], ranked[active])
                evaluations += found.evaluations
                hit = active[found.fooled]
                x_adv[hit] = found.x_adv[found.fooled].to(x_adv.dtype)
                logits[hit] = found.logits[found.fooled].to(logits.dtype)
                robust[hit] = False
            robust_after[name] = int(robust.sum())
    return SuiteResult(x_adv, logits, clean_logits, evaluations, robust_after)
