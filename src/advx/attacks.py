"""Adversarial attacks: one PGD loop, one step object per threat model, and noise baselines.

Every attack has the call shape `attack(model, x, y) -> x_adv` with x, x_adv [B, C, H, W] in pixel units
(in [0, 1] when clipping) and integer labels y [B]. Conventions (Madry et al. 2018; the robustness and
torchattacks libraries):
- the model runs in eval mode with parameter gradients off (`runtime.eval_mode`, as every evaluation does);
  gradients are taken w.r.t. the input only and the model's mode is restored afterwards;
- each step ascends the loss (descends it towards the target when targeted), then projects onto the eps
  ball, then clips to the [0, 1] box; the random start is projected and clipped too;
- clipping to the box is optional, and one rule sets its default everywhere (these functions, `Attack`, the
  config schemas and conf/*.yaml): clip defaults to True for PGD-family attacks (Madry et al. clip) and to
  False for FGSM and the noise baselines, which Goodfellow et al. (2015) never clip (`default_clip`). Data
  with no [0, 1] box (GCN+ZCA, the spheres of Gilmer et al.) refuses clip=True (`data.require_box`);
- with restarts, an example counts as robust only if no restart fools the model: the first successful
  restart is kept, else the one with the highest loss;
- FGSM (Goodfellow et al. 2015) is a single unprojected Linf step of size eps from x.

Evaluation (`Attack.evaluate`, what robust accuracy is measured with) differs from crafting in one way for
untargeted PGD: an example counts as fooled when the clean input or any iterate of any restart fools the model
(the best-iterate rule), and an example once fooled is dropped from every later step and restart (an active
set, as AutoAttack does between its attacks). The robust accuracy is identical to running every example for
every step under the same rule (tested), and never higher than final-iterate counting. Training-time and
construction attacks (`pgd`) keep their fixed number of steps and return the final iterate.

`Attack(name="autoattack")` runs the AutoAttack suite of advx.autoattack (Croce & Hein 2020: APGD-CE, APGD-T,
Square, with an active set between and within its components); like PGD it clips to the box by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from advx.autoattack import COMPONENTS, autoattack
from advx.models import per_example_loss
from advx.runtime import eval_mode

Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_adv [B,...], labels [B]) -> loss [B]
LogitsHook = Callable[[torch.Tensor], None]


def _per_example_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each example, shaped [B, 1, ..., 1] for broadcasting, guarded away from zero."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


class LinfThreat:
    """The Linf ball ||delta||_inf <= eps; steps follow the gradient's sign."""

    def init(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        return torch.empty_like(x).uniform_(-eps, eps)

    def step(self, grad: torch.Tensor, step_size: float) -> torch.Tensor:
        return step_size * grad.sign()

    def project(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        return delta.clamp(-eps, eps)


class L2Threat:
    """The L2 ball ||delta||_2 <= eps per example; steps follow the normalised gradient."""

    def init(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        direction = torch.randn_like(x)
        radius = eps * torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device)
        return direction / _per_example_norm(direction) * radius

    def step(self, grad: torch.Tensor, step_size: float) -> torch.Tensor:
        return step_size * grad / _per_example_norm(grad)

    def project(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        return delta * (eps / _per_example_norm(delta)).clamp(max=1.0)


THREATS = {"linf": LinfThreat, "l2": L2Threat}
# Madry et al. clip every PGD step, and AutoAttack's threat model is the ball inside the box; Goodfellow's FGSM and
# noise never clip
CLIPPED_BY_DEFAULT = ("pgd", "pgd_adv", "autoattack")


def default_clip(name: str) -> bool:
    """Whether an attack (none | fgsm | pgd | sign_noise | uniform_noise | autoattack) or a training regime
    (standard | fgsm_adv | pgd_adv | noise) clips to [0, 1] by default: only the PGD family (AutoAttack's APGD
    among it) does."""
    return name in CLIPPED_BY_DEFAULT


def classification_objective(model: torch.nn.Module, on_logits: LogitsHook | None = None) -> Objective:
    """The model's own training loss per example (cross-entropy for softmax outputs).

    `on_logits` sees the logits of every forward pass; the first one of an attack without random start is the
    clean prediction, which evaluation reuses instead of a second forward pass.
    """
    output = getattr(model, "output", "softmax")

    def objective(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        if on_logits is not None:
            on_logits(logits.detach())
        return per_example_loss(logits, y, output)

    return objective


def pgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = False,
    restarts: int = 1,
    clip: bool = True,
    targeted: bool = False,
    project: bool = True,
    objective: Objective | None = None,
    on_logits: LogitsHook | None = None,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018) in the Linf or L2 ball of radius eps around x.

    x: [B, ...] inputs; y: [B] true labels, or target labels when `targeted`. step_size defaults to
    2.5 * eps / steps. `objective(x_adv, y) -> [B]` replaces the classification loss (e.g. a representation
    distance); it is ascended, or descended when `targeted`. `on_logits` sees the logits of each forward pass of
    the default objective. Returns x_adv with ||x_adv - x|| <= eps
    (when `project`) and x_adv in [0, 1] (when `clip`).
    """
    threat = THREATS[norm]()
    step_size = 2.5 * eps / steps if step_size is None else step_size
    custom_objective = objective is not None
    objective = objective or classification_objective(model, on_logits)
    sign = -1.0 if targeted else 1.0
    x = x.detach()
    with eval_mode(model):
        if restarts > 1:  # the bookkeeping that picks between restarts
            best = x.clone()
            best_loss = torch.full((x.shape[0],), -torch.inf, device=x.device)
            fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(restarts):
            # a zero start is inside the ball and, for inputs in the box, the box: the first step differentiates
            # at x itself (no zero tensor to add: FGSM costs what a bare loop's does)
            delta = _constrain(threat, x, threat.init(x, eps), eps, project, clip) if random_start else None
            for _ in range(steps):
                at = x.detach().requires_grad_(True) if delta is None else delta.requires_grad_(True)
                loss = objective(at if delta is None else x + at, y)
                (grad,) = torch.autograd.grad(loss.sum(), at)
                move = sign * threat.step(grad, step_size)
                delta = _constrain(threat, x, move if delta is None else delta.detach() + move, eps, project, clip)
            x_adv = x if delta is None else x + delta
            if restarts == 1:
                return x_adv.detach()  # nothing to choose between: skip the bookkeeping forward passes
            with torch.no_grad():
                loss = sign * objective(x_adv, y).float()
                # a custom objective has no notion of success: keep the restart that scores best
                success = torch.zeros_like(fooled) if custom_objective else _fools(model, x_adv, y, targeted)
                take = ~fooled & (success | (loss > best_loss))
                best[take] = x_adv[take]
                best_loss = torch.where(take, loss, best_loss)
                fooled |= success
            if restarts > 1 and bool(fooled.all()):
                break
    return best.detach()


def _constrain(threat, x, delta, eps, project, clip):
    if project:
        delta = threat.project(delta, eps)
    if clip:
        delta = (x + delta).clamp(0, 1) - x
    return delta


def _fools(model: torch.nn.Module, x_adv: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    prediction = model(x_adv).argmax(1)
    return prediction == y if targeted else prediction != y


@dataclass(frozen=True)
class Outcome:
    """What an evaluation attack found for a batch of B examples."""

    x_adv: torch.Tensor  # [B, ...] the first fooling iterate, else the final iterate of the highest-loss restart
    logits: torch.Tensor  # [B, C] the model's logits at x_adv, from the attack's own forward pass
    clean_logits: torch.Tensor  # [B, C] the model's logits at x
    example_steps: int  # gradient steps taken, summed over examples (B * steps * restarts without an active set);
    # autoattack: forward(+backward) passes over single examples, APGD's iterates and Square's queries
    robust_after: dict[str, int] | None = None  # autoattack: examples still robust after each component, in order


def pgd_until_fooled(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = False,
    restarts: int = 1,
    clip: bool = True,
) -> Outcome:
    """Untargeted PGD for evaluation: the best-iterate rule over an active set (see the module docstring).

    x: [B, ...] inputs; y: [B] true labels; the other arguments as in `pgd`. Iterates 0..steps of every restart
    are checked; an example leaves the active set at its first fooling iterate (or at once when the clean input
    is misclassified), so its x_adv is that iterate. Random starts are drawn for the whole batch, so each
    example's trajectory is the one `pgd` would follow for it. Without a random start the first iterate is the
    clean input, so its forward pass (on every example) gives the clean logits: no separate clean pass.
    """
    threat = THREATS[norm]()
    step_size = 2.5 * eps / steps if step_size is None else step_size
    output = getattr(model, "output", "softmax")
    x = x.detach()
    with eval_mode(model):
        clean_logits = logits = None  # set by the clean pass, or by iterate 0 when it is the clean input
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        if random_start:
            with torch.no_grad():
                clean_logits = model(x)
            logits = clean_logits.clone()
            fooled = clean_logits.argmax(1) != y
        best, best_loss = x.clone(), torch.full((x.shape[0],), -torch.inf, device=x.device)
        example_steps = 0
        for _ in range(restarts):
            start = threat.init(x, eps) if random_start else torch.zeros_like(x)  # drawn for all: same RNG use
            active = (~fooled).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            xa, ya = x[active], y[active]
            delta = _constrain(threat, xa, start[active], eps, True, clip)
            for step in range(steps + 1):
                delta.requires_grad_(step < steps)
                with torch.set_grad_enabled(step < steps):
                    step_logits = model(xa + delta)
                if clean_logits is None:  # iterate 0 of the first restart, on every example: the clean input
                    clean_logits = step_logits.detach().clone()
                    logits = clean_logits.clone()
                success = step_logits.argmax(1) != ya
                done = success if step < steps else torch.ones_like(success)
                if bool(done.any()):
                    index = active[done]
                    # fooled examples always take their iterate; survivors of the last step keep the best restart
                    loss = per_example_loss(step_logits.detach(), ya, output).float()[done]
                    take = success[done] | (loss > best_loss[index])
                    best[index[take]] = (xa + delta).detach()[done][take]
                    logits[index[take]] = step_logits.detach()[done][take].to(logits.dtype)
                    best_loss[index[take]] = loss[take]
                    fooled[index] |= success[done]
                if step == steps:
                    break
                (grad,) = torch.autograd.grad(per_example_loss(step_logits, ya, output).sum(), delta)
                keep = ~success
                example_steps += int(keep.sum())
                active, xa, ya = active[keep], xa[keep], ya[keep]
                if active.numel() == 0:
                    break
                delta = delta.detach()[keep] + threat.step(grad[keep], step_size)
                delta = _constrain(threat, xa, delta, eps, True, clip)
    return Outcome(best.detach(), logits, clean_logits, example_steps)


def fgsm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, clip: bool = False,
         objective: Objective | None = None, on_logits: LogitsHook | None = None) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): x + eps * sign(grad_x J(x, y)), unprojected.

    The paper never clips to [0, 1]; `clip=True` clips the result to the box.
    """
    return pgd(model, x, y, eps=eps, norm="linf", steps=1, step_size=eps, random_start=False, clip=clip,
               project=False, objective=objective, on_logits=on_logits)


def sign_noise(x: torch.Tensor, *, eps: float, clip: bool = False) -> torch.Tensor:
    """Random sign noise of the FGSM's size: x + eps * sign(N(0, 1)) (Goodfellow 2015's control)."""
    noisy = x + eps * torch.randn_like(x).sign()
    return noisy.clamp(0, 1) if clip else noisy


def uniform_noise(x: torch.Tensor, *, eps: float, clip: bool = False) -> torch.Tensor:
    """Uniform noise x + U(-eps, eps) (Goodfellow 2015's control)."""
    noisy = x + torch.empty_like(x).uniform_(-eps, eps)
    return noisy.clamp(0, 1) if clip else noisy


def target_labels(y: torch.Tensor, num_classes: int, mode: str) -> torch.Tensor:
    """Targets for targeted attacks: `next` is (y + 1) mod C, `random` is uniform over the other classes."""
    if mode == "next":
        return (y + 1) % num_classes
    offset = torch.randint(1, num_classes, y.shape, device=y.device)
    return (y + offset) % num_classes


@dataclass(frozen=True)
class Attack:
    """A configured attack with the uniform call shape `attack(model, x, y) -> x_adv` for one eps."""

    name: str  # none | fgsm | pgd | sign_noise | uniform_noise | autoattack
    eps: float
    norm: str = "linf"
    steps: int | None = None  # None: 1, or autoattack's 100 APGD iterations per run (its standard version)
    step_size: float | None = None
    random_start: bool = False
    restarts: int = 1
    targeted: bool = False
    target: str = "random"
    clip: bool | None = None  # None: default_clip(name), True for pgd and autoattack, False for fgsm and noise
    # autoattack only (advx.autoattack): restarts are per component (apgd-t: per target class), random_start,
    # step_size, targeted and target are unused (APGD starts on the ball's surface with a step of 2 * eps)
    components: tuple[str, ...] = COMPONENTS  # run in this order: apgd-ce, apgd-t, square (FAB-T left out)
    targets: int = 9  # apgd-t's target classes (the standard version's 9; at most C - 1)
    square_queries: int = 5000  # the standard version's Square budget per example

    def __post_init__(self) -> None:
        if self.clip is None:
            object.__setattr__(self, "clip", default_clip(self.name))
        if self.steps is None:
            object.__setattr__(self, "steps", 100 if self.name == "autoattack" else 1)
        object.__setattr__(self, "components", tuple(self.components))

    @property
    def sees_clean_logits(self) -> bool:
        """True when the first forward pass of the attack is on the clean input (gradient attack, no random start)."""
        return self.name == "fgsm" or (self.name == "pgd" and not self.random_start and self.eps > 0)

    @property
    def until_fooled(self) -> bool:
        """True when evaluation uses the active set and the best-iterate rule: untargeted PGD."""
        return self.name == "pgd" and not self.targeted and self.eps > 0

    def evaluate(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                 source: torch.nn.Module | None = None) -> Outcome:
        """The attack as robust accuracy is measured: x_adv with `model`'s logits at x and at x_adv.

        Untargeted PGD on the model itself runs `pgd_until_fooled`; every other attack, and any attack crafted on
        a transfer `source` (whose being fooled decides nothing about the model), is crafted in full and x_adv
        forwarded once. AutoAttack runs its suite (active set on the model, or on the `source` when given) and
        reports its cost as forward passes (`Outcome.example_steps`) and the robust count after each component.
        """
        if self.name == "autoattack" and self.eps > 0:
            suite = self._suite(source if source is not None else model, x, y)
            if source is None:
                return Outcome(suite.x_adv, suite.logits, suite.clean_logits, suite.evaluations, suite.robust_after)
            with eval_mode(model), torch.no_grad():
                return Outcome(suite.x_adv, model(suite.x_adv), model(x), suite.evaluations)
        if self.until_fooled and source is None:
            return pgd_until_fooled(model, x, y, eps=self.eps, norm=self.norm, steps=self.steps,
                                    step_size=self.step_size, random_start=self.random_start,
                                    restarts=self.restarts, clip=bool(self.clip))
        seen: list[torch.Tensor] = []
        reuse_clean = source is None and self.sees_clean_logits
        x_adv = self(source if source is not None else model, x, y, on_logits=seen.append if reuse_clean else None)
        with eval_mode(model), torch.no_grad():
            clean_logits = seen[0] if seen else model(x)
            logits = model(x_adv)
        gradient_steps = self.steps * self.restarts if self.name == "pgd" else int(self.name == "fgsm")
        return Outcome(x_adv.detach(), logits, clean_logits, x.shape[0] * gradient_steps)

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                 on_logits: LogitsHook | None = None) -> torch.Tensor:
        if self.name == "none" or self.eps == 0:
            return x
        if self.name == "fgsm":
            return fgsm(model, x, y, eps=self.eps, clip=self.clip, on_logits=on_logits)
        if self.name == "sign_noise":
            return sign_noise(x, eps=self.eps, clip=self.clip)
        if self.name == "uniform_noise":
            return uniform_noise(x, eps=self.eps, clip=self.clip)
        if self.name == "autoattack":
            return self._suite(model, x, y).x_adv
        goal = y
        if self.targeted:
            with eval_mode(model), torch.no_grad():  # train mode would update (or, on one example, break) BN
                num_classes = model(x[:1]).shape[1]
            goal = target_labels(y, num_classes, self.target)
        return pgd(model, x, goal, eps=self.eps, norm=self.norm, steps=self.steps, step_size=self.step_size,
                   random_start=self.random_start, restarts=self.restarts, clip=self.clip,
                   targeted=self.targeted, on_logits=on_logits)

    def _suite(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
        return autoattack(model, x, y, eps=self.eps, norm=self.norm, components=self.components, steps=self.steps,
                          restarts=self.restarts, targets=self.targets, square_queries=self.square_queries,
                          clip=bool(self.clip))
