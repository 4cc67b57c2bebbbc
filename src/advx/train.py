"""The training loop: SGD/Adam with schedules, the regimes, max-norm, early stopping, per-epoch state.

Batches may be augmented first (random shifts and flips, `train.augment`). Regimes (the objective on a
minibatch x, y):
- standard: J(x, y).
- fgsm_adv: alpha * J(x, y) + (1 - alpha) * J(x + eps * sign(grad_x J), y), the FGSM examples regenerated
  from the current parameters every minibatch, no gradient through sign() (Goodfellow et al. 2015, Sec. 6).
- pgd_adv: the same mix with PGD examples; alpha = 0 is Madry et al. (2018) and Ilyas et al.'s L2 recipe.
  `regime.eps_warmup_epochs` ramps eps (and the step size) up linearly over the first epochs.
- noise: the same mix with sign or uniform noise of size eps instead (Goodfellow 2015's controls).
The perturbed inputs come from the same `attacks.Attack` that evaluation uses (`regime_attack`), crafted in
eval mode and detached. The self-supervised regimes (simclr, mae, ddpm: advx.pretext) train `features` and
`pretext` on the images alone and record only their loss per epoch (the head they leave untrained has no error
worth reporting). In a model with batch norm the clean and perturbed halves are forwarded separately, so
batch norm normalises each by its own statistics; without batch norm they go through one forward pass of the
concatenated batch (the same objective, one larger matrix product: about 17% less time per adversarial batch
of the maxout MNIST recipe on 2 CPU cores). At alpha = 0 the clean half is never forwarded in train mode.

The full training state is saved after every epoch, so a killed run loses at most the epoch in progress and
`fit` continues from the saved state bit for bit (model, optimiser, history, RNG streams).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from advx.attacks import Attack
from advx.data import Dataset, augment, require_box
from advx.errors import CheckpointError, DamagedFile, first_line, shown
from advx.evaluate import attack_metrics, error_rate
from advx.models import Classifier, per_example_loss
from advx.pretext import is_self_supervised, pretext_loss
from advx.progress import Bars
from advx.runs import load_tensors, save_torch, state_mismatch
from advx.runtime import Runtime
from advx.schema import LoopConfig, OptimConfig, RegimeConfig

log = logging.getLogger(__name__)


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


def ramp_progress(cfg: OptimConfig, epoch: int, epochs: int) -> float:
    """How far 0-based `epoch` is along the lr decay and momentum ramp, in [0, 1]: they saturate at epoch
    `cfg.saturate_epochs` (1-based; pylearn2's LinearDecayOverEpoch / MomentumAdjustor), or at the run's last."""
    saturate = cfg.saturate_epochs or epochs
    return min(1.0, epoch / max(saturate - 1, 1))


def learning_rate(cfg: OptimConfig, epoch: int, epochs: int) -> float:
    """The learning rate for a 0-based epoch of `epochs`."""
    progress = ramp_progress(cfg, epoch, epochs)
    if cfg.schedule == "linear":
        return cfg.lr * (1 - (1 - cfg.lr_final_factor) * progress)
    if cfg.schedule == "cosine":
        return cfg.lr * (cfg.lr_final_factor + (1 - cfg.lr_final_factor) * 0.5 * (1 + math.cos(math.pi * progress)))
    if cfg.schedule == "step":
        return cfg.lr * cfg.step_gamma ** (epoch // cfg.step_every)
    return cfg.lr


def momentum(cfg: OptimConfig, epoch: int, epochs: int) -> float:
    """Momentum ramped linearly from `momentum` to `momentum_final` (pylearn2's MomentumAdjustor)."""
    if cfg.momentum_final is None:
        return cfg.momentum
    return cfg.momentum + (cfg.momentum_final - cfg.momentum) * ramp_progress(cfg, epoch, epochs)


REGIME_ATTACKS = {"standard": "none", "fgsm_adv": "fgsm", "pgd_adv": "pgd"}  # noise: sign_noise | uniform_noise


def regime_attack(regime: RegimeConfig, name: str | None = None) -> Attack:
    """The Attack that makes the regime's perturbed inputs (FGSM, PGD or noise of size regime.eps), or attack
    `name` with the regime's eps and clip (the FGSM early-stopping criterion). One construction path for both."""
    if name is None:
        name = f"{regime.noise}_noise" if regime.name == "noise" else REGIME_ATTACKS[regime.name]
    return Attack(name=name, eps=regime.eps, norm=regime.norm, steps=regime.steps, step_size=regime.step_size,
                  random_start=regime.random_start, clip=regime.clip)


def regime_at_epoch(regime: RegimeConfig, epoch: int) -> RegimeConfig:
    """The regime of 0-based `epoch`: during the eps warm-up (regime.eps_warmup_epochs = N > 0, epochs 0 to
    N - 1) eps and the step size are scaled by (epoch + 1) / N; afterwards, and without a warm-up, `regime`."""
    if epoch >= regime.eps_warmup_epochs:
        return regime
    scale = (epoch + 1) / regime.eps_warmup_epochs
    return dataclasses.replace(regime, eps=regime.eps * scale,
                               step_size=None if regime.step_size is None else regime.step_size * scale)


def trains_on_clean(regime: RegimeConfig) -> bool:
    """False when the objective sees only perturbed inputs (alpha = 0: Madry et al.; Ilyas et al.'s L2 recipe)."""
    return regime.name == "standard" or regime.alpha > 0


def regime_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, regime: RegimeConfig, output: str,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The regime's minibatch objective (a scalar) and logits [B, C] for the training-error metric.

    A self-supervised regime returns its pretext loss (`advx.pretext.pretext_loss`, random draws from
    `generator`, torch's global one when None) and no logits.

    x: [B, ...] inputs; y: [B] labels. The loss is alpha * J(x) + (1 - alpha) * J(x_adv), each term a mean over
    the batch, with x_adv from `regime_attack` (crafted in eval mode, detached: no gradient flows through the
    perturbation). With batch norm, clean and perturbed batches are forwarded separately, so batch norm
    normalises each with its own statistics; without, they are forwarded as one batch. At alpha = 0 only x_adv
    is forwarded and the returned logits are x_adv's (the metric is then the error on perturbed inputs,
    `train_perturbed_error`); otherwise they are the clean logits.
    """
    if is_self_supervised(regime):
        return pretext_loss(model, x, regime, generator or torch.default_generator), None
    if regime.name == "standard":
        logits = model(x)
        return per_example_loss(logits, y, output).mean(), logits
    x_other = regime_attack(regime)(model, x, y).detach()
    if not trains_on_clean(regime):  # alpha = 0: the clean batch must not touch batch-norm statistics
        other = model(x_other)
        return per_example_loss(other, y, output).mean(), other
    if has_batch_norm(model):
        clean, other = model(x), model(x_other)
    else:
        clean, other = model(torch.cat([x, x_other])).split(len(x))
    loss = regime.alpha * per_example_loss(clean, y, output).mean()
    loss = loss + (1 - regime.alpha) * per_example_loss(other, y, output).mean()
    return loss, clean


def has_batch_norm(model: torch.nn.Module) -> bool:
    """True when a forward pass's result depends on the rest of its batch in train mode (batch norm)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


STATE_KEYS = ("epoch", "history", "best_value", "best_epoch", "best_weights", "stopped_early", "model", "optimizer",
              "scaler", "rng_torch", "rng_data", "rng_cuda")  # what `TrainState.to_dict` saves every epoch


class TrainState:
    """Everything needed to continue a run: epoch, history, best-so-far, optimiser and RNG streams."""

    def __init__(self) -> None:
        self.epoch = -1  # last completed epoch
        self.history: list[dict] = []
        self.best_value = math.inf
        self.best_epoch = -1
        self.best_weights: dict | None = None
        self.stopped_early = False

    def to_dict(self, model, optimizer, scaler, generator) -> dict:
        return {
            "epoch": self.epoch, "history": self.history, "best_value": self.best_value,
            "best_epoch": self.best_epoch, "best_weights": self.best_weights, "stopped_early": self.stopped_early,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "rng_torch": torch.get_rng_state(), "rng_data": generator.get_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    @classmethod
    def load(cls, path: Path, model, optimizer, scaler, generator) -> TrainState:
        remedy = "the run cannot be resumed; start it again in a new run dir"
        saved = load_tensors(path, remedy)
        missing = [key for key in STATE_KEYS if key not in saved] if isinstance(saved, dict) else list(STATE_KEYS)
        if missing:
            raise DamagedFile(path, f"{shown(path)} is not a training state (no {', '.join(missing[:3])}); {remedy}")
        problem = state_mismatch(model, saved["model"])
        if problem:
            raise CheckpointError(f"cannot resume from {shown(path)}: it was saved by another model ({problem})")
        try:
            optimizer.load_state_dict(saved["optimizer"])
        except (ValueError, KeyError) as error:
            raise CheckpointError(f"cannot resume from {shown(path)}: its optimizer state belongs to another "
                                  f"optimizer ({first_line(error)})") from None
        model.load_state_dict(saved["model"])
        scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng_torch"])
        generator.set_state(saved["rng_data"])
        if saved["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["rng_cuda"])
        state = cls()
        for key in ("epoch", "history", "best_value", "best_epoch", "best_weights", "stopped_early"):
            setattr(state, key, saved[key])
        return state


def fit(model: Classifier, data: Dataset, *, optim: OptimConfig, regime: RegimeConfig, loop: LoopConfig,
        runtime: Runtime, generator: torch.Generator, state_path: Path | None = None,
        on_epoch: Callable[[list[dict]], None] | None = None, bars: Bars | None = None) -> TrainState:
    """Train `model` (already on the device) in place; returns the final state with the per-epoch history.

    With a validation split, `loop.patience > 0` stops after that many epochs without improvement of
    `loop.early_stop_on` and restores the best weights. With a validation split (patience or not) the per-epoch
    rows hold validation error and no test error: nothing chosen during training can have looked at the test set
    (the caller scores it once at the end).
    A self-supervised regime (advx.pretext) records only train_loss per epoch: no validation or test error of its
    untrained head. If `state_path` holds a saved state, training continues from it; the state is rewritten after
    every epoch.
    """
    require_box(regime.clip, data.train, "regime.clip")  # GCN+ZCA and spheres have no [0, 1] box to clip to
    net = runtime.prepare(model)  # the module to call (compiled when asked); `model` keeps the parameters
    optimizer = make_optimizer(model, optim)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.precision == "fp16")
    state = TrainState()
    if state_path is not None and state_path.is_file():
        state = TrainState.load(state_path, model, optimizer, scaler, generator)
        log.info("resuming after epoch %d of %d from %s", state.epoch + 1, loop.epochs, state_path)
    bars = bars or Bars(enabled=False)
    self_supervised = is_self_supervised(regime)
    error_key = "train_error" if trains_on_clean(regime) else "train_perturbed_error"
    epochs_task = bars.outer("epochs", total=loop.epochs, completed=state.epoch + 1)
    batches_per_epoch = -(-len(data.train) // loop.batch_size)
    for epoch in range(state.epoch + 1, loop.epochs):
        if state.stopped_early:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(optim, epoch, loop.epochs)
            if optim.name == "sgd":
                group["momentum"] = momentum(optim, epoch, loop.epochs)
        epoch_regime = regime_at_epoch(regime, epoch)
        if epoch_regime is not regime:
            log.info("eps warm-up: epoch %d trains at eps %.4g", epoch + 1, epoch_regime.eps)
        started = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=runtime.device)
        wrong = torch.zeros((), device=runtime.device)
        batches = bars.inner(data.train.batches(loop.batch_size, generator), f"epoch {epoch + 1}", batches_per_epoch)
        for x, y in batches:
            x = augment(x, loop.augment, loop.crop_padding, generator)
            with runtime.autocast():
                loss, logits = regime_loss(net, x, y, epoch_regime, model.output, generator)
                if optim.l1_first_layer:
                    loss = loss + optim.l1_first_layer * model.first_weight().abs().sum()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            model.constrain()
            loss_sum += loss.detach() * len(y)
            if logits is not None:
                wrong += (logits.detach().argmax(1) != y).sum()
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
               "train_loss": loss_sum.item() / len(data.train)}
        if not self_supervised:  # the head a pretext task leaves untrained has no error worth recording
            row[error_key] = wrong.item() / len(data.train)  # with dropout active; on x_adv when alpha = 0
        row["seconds"] = 0.0
        if data.val is not None and not self_supervised:
            row["val_error"] = error_rate(net, data.val, runtime, loop.eval_batch_size)
            if loop.early_stop_on == "val_adv_error":
                # Goodfellow's early-stopping criterion for adversarial training: FGSM error at the regime's eps
                fgsm_at_eps = regime_attack(regime, "fgsm")
                row["val_adv_error"] = attack_metrics(net, data.val, fgsm_at_eps, runtime,
                                                      batch_size=loop.eval_batch_size)["adv_error"]
        if not self_supervised and data.val is None:  # with a validation split no choice may look at the test set
            row["test_error"] = error_rate(net, data.test, runtime, loop.eval_batch_size)
        row["seconds"] = time.perf_counter() - started
        state.history.append(row)
        state.epoch = epoch
        _early_stopping(state, model, row, loop)
        if state_path is not None:
            save_torch(state_path, state.to_dict(model, optimizer, scaler, generator))
        shown = "  ".join(f"{k}={v:.4f}" for k, v in row.items() if k not in ("epoch", "lr", "seconds"))
        log.info("epoch %d/%d  %s  (%.1fs)", epoch + 1, loop.epochs, shown, row["seconds"])
        shown_key = "train_loss" if self_supervised else "test_error" if data.val is None else "val_error"
        bars.advance(epochs_task, info=f"{shown_key}={row[shown_key]:.4f}")
        if on_epoch is not None:
            on_epoch(state.history)
    if loop.patience and state.best_weights is not None:
        model.load_state_dict(state.best_weights)
        log.info("restored the best weights (epoch %d, %s=%.4f)", state.best_epoch + 1, loop.early_stop_on,
                 state.best_value)
    return state


def _early_stopping(state: TrainState, model: torch.nn.Module, row: dict, loop: LoopConfig) -> None:
    value = row.get(loop.early_stop_on)
    if not loop.patience or value is None:
        return
    if value < state.best_value:
        state.best_value, state.best_epoch = value, state.epoch
        state.best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    elif state.epoch - state.best_epoch >= loop.patience:
        state.stopped_early = True
        log.info("early stop: no %s improvement for %d epochs", loop.early_stop_on, loop.patience)
