"""Derived datasets on disk (Ilyas et al. 2019): what `advx construct` writes and `dataset=derived` reads.

A construct run dir holds, besides Hydra's files:
  chunks/00000.pt ...  the finished chunks while the construction runs (each written atomically); a restarted
                       construction skips them, and they are removed once the dataset is assembled
  dataset.pt           {"images": float32 [N, C, H, W] in [0, 1], "labels": int64 [N]}: never quantised to
                       uint8 or JPEG, since the non-robust features live in perturbations below one grey level
  derived.json         kind, source run, the source's dataset config (whose test split evaluates), parameters
                       and the construction's statistics
  metrics.json         the statistics again, written last: its presence means the dataset is complete

The authors' released datasets (d_robust_CIFAR, d_non_robust_CIFAR, ...) are folders with two torch files,
`CIFAR_ims` and `CIFAR_lab`, each a tensor or a list of tensors; a folder with those files loads too, with
`dataset.base` naming the dataset whose test split goes with it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from advx.errors import DataError, first_line
from advx.runs import save_torch, write_json

DATA_FILE, META_FILE, CHUNKS_DIR = "dataset.pt", "derived.json", "chunks"
RELEASED_IMAGES, RELEASED_LABELS = "CIFAR_ims", "CIFAR_lab"


def chunk_path(out: Path, index: int) -> Path:
    return out / CHUNKS_DIR / f"{index:05d}.pt"


def save_chunk(out: Path, index: int, chunk: dict[str, torch.Tensor]) -> None:
    """One finished chunk (CPU tensors): images float32 [n, C, H, W], labels [n], per-example statistics [n]."""
    save_torch(chunk_path(out, index), chunk)


def load_chunk(out: Path, index: int) -> dict[str, torch.Tensor] | None:
    """A chunk saved by an earlier (possibly killed) run, or None if it was never finished."""
    path = chunk_path(out, index)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # cannot happen with atomic writes, but a foreign file must not stop the run
        path.unlink()
        return None


def assemble(out: Path, chunks: list[dict[str, torch.Tensor]], meta: dict) -> None:
    """Write dataset.pt and derived.json from the chunks in order, then drop the chunk files."""
    images = torch.cat([c["images"] for c in chunks]).float()
    labels = torch.cat([c["labels"] for c in chunks]).long()
    save_torch(out / DATA_FILE, {"images": images, "labels": labels})
    write_json(out / META_FILE, meta)
    shutil.rmtree(out / CHUNKS_DIR, ignore_errors=True)


def read_derived(path: Path) -> tuple[torch.Tensor, torch.Tensor, dict | None]:
    """Images float32 [N, C, H, W], labels int64 [N], and the source's dataset config (None for released files)."""
    if not path.is_dir():
        raise DataError(f"derived dataset {path} does not exist (dataset.path should be an `advx construct` dir)")
    if (path / DATA_FILE).is_file():
        try:
            data = torch.load(path / DATA_FILE, map_location="cpu", weights_only=True)
            meta = json.loads((path / META_FILE).read_text())
            return data["images"].float(), data["labels"].long(), meta["source_dataset"]
        except Exception as error:  # a truncated copy, a foreign file or a hand-edited metadata file
            raise DataError(f"cannot read the derived dataset in {path}: {first_line(error)}") from None
    if (path / RELEASED_IMAGES).is_file() and (path / RELEASED_LABELS).is_file():
        return (*_read_released(path), None)
    if (path / CHUNKS_DIR).is_dir():
        raise DataError(f"the construction in {path} did not finish; continue it with `advx construct resume={path}`")
    raise DataError(f"no derived dataset in {path}: expected {DATA_FILE} (advx construct) or "
                    f"{RELEASED_IMAGES} and {RELEASED_LABELS} (the authors' released format)")


def _read_released(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' files: each a tensor, or a list of per-batch [b, ...] or per-example tensors."""
    def read(name: str) -> torch.Tensor:
        try:
            value = torch.load(path / name, map_location="cpu", weights_only=True)
        except Exception as error:
            raise DataError(f"cannot read {path / name}: {first_line(error)}") from None
        if isinstance(value, list | tuple):
            if not value:
                raise DataError(f"{path / name} holds an empty list")
            value = torch.stack(value) if value[0].dim() in (0, 3) else torch.cat(value)
        if not isinstance(value, torch.Tensor):
            raise DataError(f"{path / name} holds a {type(value).__name__}, not tensors")
        return value

    images, labels = read(RELEASED_IMAGES), read(RELEASED_LABELS)
    if images.dim() != 4 or labels.dim() != 1 or len(images) != len(labels):
        raise DataError(f"released files in {path} do not match: images {tuple(images.shape)}, "
                        f"labels {tuple(labels.shape)} (expected [N, C, H, W] and [N])")
    images = images.float()
    if images.max() > 1.0 + 1e-6:  # saved as 0..255 pixel values
        images = images / 255
    return images, labels.long()
