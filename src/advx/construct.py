"""Constructing datasets from a source model (Ilyas et al. 2019, Sec. 3): D_R, D_NR, D_rand and D_det.

- Representation inversion (kinds robust / nonrobust): for each training pair (x, y), start from a different
  training image chosen at random and minimise ||g(z) - g(x)||_2 over z in [0, 1]^d by normalised-gradient
  steps, clipping to the box after each step; the new example is (z, y). g is the penultimate-layer
  representation (`model.features`). A robust source keeps only robust features (D_R); a standard source the
  features it uses, mostly non-robust ones (D_NR).
- Targeted relabelling (kinds drand / ddet): x_adv is targeted L2 PGD on a standard source towards t, with t
  uniform over the classes (D_rand, as the paper: "uniformly at random among classes") or (y + 1) mod C
  (D_det); the new example is (x_adv, t). What links x_adv to t is the non-robust perturbation alone.
- The leakage control (kind dnoise): D_det's labels t = (y + 1) mod C, but x moved by a fixed random pattern of
  class t with L2 norm eps (one pattern per class, no optimisation, no model), clipped to the box. A model
  trained on it can learn the patterns and the digits' shapes, nothing that transfers to clean data; D_det
  beating it on the clean test set is what non-robust features (or robust features leaked into D_det's
  perturbations) add over any class-wise signal of that norm. After the replications of Ilyas et al. (the
  "Discussion" in Distill, 2019) that ask whether D_det's perturbations leak robust features.

Both are `attacks.pgd`: inversion is PGD descending a representation distance in an unbounded ball. Every
random choice is drawn up front from the seed (`plan`), and chunks are saved as they finish, so a killed
construction restarts after its last saved chunk and ends with the same dataset as an uninterrupted one.

Constructions always run in fp32, whatever `runtime.precision` says: inversion matches representations to
small relative distances over a thousand steps and relabelling pushes examples just across a decision boundary,
and both are precision-sensitive (bf16 autocast changes which examples succeed and by how much).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from advx.attacks import pgd
from advx.data import Split
from advx.derived import load_chunk, save_chunk
from advx.errors import ConfigError
from advx.progress import Bars
from advx.runtime import Runtime, eval_mode
from advx.schema import ConstructConfig


def representation_inversion(model: torch.nn.Module, x_target: torch.Tensor, x_start: torch.Tensor, *,
                             steps: int, step_size: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z [B, ...] in [0, 1] whose representation matches x_target's (Ilyas et al. 2019, Sec. 3.1).

    Returns z, the final distance ||g(z) - g(x_target)||_2 [B] and the target's norm ||g(x_target)||_2 [B].
    """
    with eval_mode(model), torch.no_grad():
        target = model.features(x_target).flatten(1).float()

    def distance(z: torch.Tensor, _unused: torch.Tensor) -> torch.Tensor:
        return (model.features(z).flatten(1).float() - target).norm(dim=1)

    unused = torch.zeros(len(x_start), dtype=torch.long, device=x_start.device)
    z = pgd(model, x_start, unused, eps=math.inf, norm="l2", steps=steps, step_size=step_size, targeted=True,
            project=False, clip=True, objective=distance)
    with eval_mode(model), torch.no_grad():
        final = distance(z, unused)
    return z, final, target.norm(dim=1)


def targeted_relabel(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, *, eps: float, steps: int,
                     step_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Targeted L2 PGD towards `targets` [B] (Ilyas et al. 2019, Sec. 3.2); x_adv and whether the model now
    predicts the target [B] (bool)."""
    x_adv = pgd(model, x, targets, eps=eps, norm="l2", steps=steps, step_size=step_size, targeted=True, clip=True)
    with eval_mode(model), torch.no_grad():
        return x_adv, model(x_adv).argmax(1) == targets


@dataclass
class Plan:
    """Every random choice of a construction, drawn once from the seed. All [n] int64 on the CPU."""

    index: torch.Tensor  # the training examples, in order: the first n of the split
    start: torch.Tensor  # inversion: a different training image to start from
    labels: torch.Tensor  # the derived labels: y for inversion, t for relabelling
    patterns: torch.Tensor | None = None  # dnoise: one unit-L2 pattern per class [C, *image_shape], float32

    def __len__(self) -> int:
        return len(self.index)


def make_plan(cfg: ConstructConfig, train_labels: torch.Tensor, num_classes: int, seed: int,
              image_shape: tuple[int, ...] = ()) -> Plan:
    n_train = len(train_labels)
    if cfg.num_examples is not None and cfg.num_examples > n_train:
        raise ConfigError(f"construct.num_examples={cfg.num_examples} exceeds the {n_train} training examples of the "
                          f"source's dataset; use null for all")
    n = cfg.num_examples or n_train
    generator = torch.Generator().manual_seed(seed)
    index = torch.arange(n)
    start = (index + torch.randint(1, n_train, (n,), generator=generator)) % n_train  # never the example itself
    y = train_labels[:n].cpu()
    if cfg.kind == "drand":
        labels = torch.randint(0, num_classes, (n,), generator=generator)
    elif cfg.kind in ("ddet", "dnoise"):
        labels = (y + 1) % num_classes
    else:
        labels = y
    patterns = None
    if cfg.kind == "dnoise":  # drawn after everything else: the other kinds' plans do not move
        if not image_shape:
            raise ValueError("construct=dnoise needs the image shape [C, H, W] for its class patterns")
        patterns = torch.randn(num_classes, *image_shape, generator=generator)
        patterns /= patterns.flatten(1).norm(dim=1).view(-1, *([1] * len(image_shape)))
    return Plan(index, start, labels, patterns)


def construct(model: torch.nn.Module, train: Split, plan: Plan, cfg: ConstructConfig, runtime: Runtime, out: Path,
              bars: Bars) -> list[dict[str, torch.Tensor]]:
    """Build (or finish) every chunk of the plan in `out`; returns all chunks in order, on the CPU (saved and
    freshly built ones alike, so the whole dataset never sits on the device). Computes in fp32: `runtime`'s
    precision is ignored here (see the module docstring).

    A chunk is {"images": float32 [n, C, H, W], "labels": [n], and "distance", "target_norm" (inversion) or
    "success" (relabelling) [n]}.
    """
    starts = range(0, len(plan), cfg.chunk_size)
    task = bars.outer(f"construct {cfg.kind}", total=len(plan))
    chunks = []
    for number, begin in enumerate(starts):
        chunk = load_chunk(out, number)
        if chunk is None:
            built = _build_chunk(model, train, plan, slice(begin, begin + cfg.chunk_size), cfg)
            chunk = {key: value.detach().cpu() for key, value in built.items()}
            save_chunk(out, number, chunk)
        chunks.append(chunk)
        bars.advance(task, by=len(chunk["labels"]), info=_chunk_info(chunk))
    return chunks


def _build_chunk(model, train: Split, plan: Plan, part: slice, cfg: ConstructConfig) -> dict[str, torch.Tensor]:
    """One chunk, in fp32: autocast is off even inside a caller's autocast region (precision-sensitive)."""
    device = train.labels.device
    x, _ = train.batch(plan.index[part].to(device))
    labels = plan.labels[part].to(device)
    with torch.autocast(device_type=device.type, enabled=False):
        if cfg.inverts:
            x_start, _ = train.batch(plan.start[part].to(device))
            z, distance, norm = representation_inversion(model, x, x_start, steps=cfg.steps, step_size=cfg.step_size)
            return {"images": z.float(), "labels": labels, "distance": distance, "target_norm": norm}
        if cfg.kind == "dnoise":
            x_moved = (x + cfg.eps * plan.patterns.to(device)[labels]).clamp(0, 1)
            with eval_mode(model), torch.no_grad():
                return {"images": x_moved, "labels": labels, "success": model(x_moved).argmax(1) == labels}
        x_adv, success = targeted_relabel(model, x, labels, eps=cfg.eps, steps=cfg.steps, step_size=cfg.step_size)
        return {"images": x_adv.float(), "labels": labels, "success": success}


def _chunk_info(chunk: dict[str, torch.Tensor]) -> str:
    if "success" in chunk:
        return f"targeted success {chunk['success'].float().mean():.3f}"
    return f"relative distance {(chunk['distance'] / chunk['target_norm'].clamp_min(1e-12)).mean():.3f}"


def summarize_chunks(chunks: list[dict[str, torch.Tensor]], cfg: ConstructConfig) -> dict[str, float]:
    """The construction's summary: mean representation distance (absolute and relative to ||g(x)||) for
    inversion, the targeted success rate (the source predicts t) for relabelling."""
    def joined(key: str) -> torch.Tensor:
        return torch.cat([c[key].float() for c in chunks])

    stats: dict[str, float] = {"examples": sum(len(c["labels"]) for c in chunks)}
    if cfg.inverts:
        distance, norm = joined("distance"), joined("target_norm")
        stats.update(representation_distance=float(distance.mean()),
                     relative_distance=float((distance / norm.clamp_min(1e-12)).mean()))
    else:
        stats["targeted_success_rate"] = float(joined("success").mean())
    return stats
