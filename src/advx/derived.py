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

import logging
import shutil
from pathlib import Path

import torch

from advx.errors import DamagedFile, DataError, first_line, shown
from advx.runs import load_tensors, read_json, save_torch, write_json

log = logging.getLogger("advx")
DATA_FILE, META_FILE, CHUNKS_DIR = "dataset.pt", "derived.json", "chunks"
RELEASED_IMAGES, RELEASED_LABELS = "CIFAR_ims", "CIFAR_lab"
STATISTICS = (("success",), ("distance", "target_norm"))  # a chunk's per-example statistics: relabel, inversion


def chunk_path(out: Path, index: int) -> Path:
    return out / CHUNKS_DIR / f"{index:05d}.pt"


def save_chunk(out: Path, index: int, chunk: dict[str, torch.Tensor]) -> None:
    """One finished chunk (CPU tensors): images float32 [n, C, H, W], labels [n], per-example statistics [n]."""
    save_torch(chunk_path(out, index), chunk)


def load_chunk(out: Path, index: int) -> dict[str, torch.Tensor] | None:
    """A chunk saved by an earlier (possibly killed) run, or None if it was never finished or cannot be read back:
    a damaged chunk is rebuilt (with a warning) and the rebuilt one replaces its file."""
    path = chunk_path(out, index)
    if not path.is_file():
        return None
    try:  # atomic writes never leave a half-written chunk, but a disk error or a foreign file must not stop the run
        chunk = load_tensors(path, "it will be rebuilt")
        problem = _chunk_problem(chunk)
        if problem:
            raise DamagedFile(path, f"{shown(path)} is damaged ({problem}); it will be rebuilt")
    except DamagedFile as error:
        log.warning("damaged chunk: %s", error)
        return None
    return chunk


def _chunk_problem(chunk: object) -> str | None:
    """What is wrong with a loaded chunk (missing or misshapen tensors), or None when it is whole."""
    if not isinstance(chunk, dict):
        return "not a dict of tensors"
    images, labels = chunk.get("images"), chunk.get("labels")
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        return "no images or labels"
    if images.dim() != 4 or labels.dim() != 1 or len(images) != len(labels):
        return f"images {tuple(images.shape)} and labels {tuple(labels.shape)} do not match"
    statistics = next((keys for keys in STATISTICS if all(key in chunk for key in keys)), None)
    if statistics is None or any(not isinstance(chunk[key], torch.Tensor) or chunk[key].shape != labels.shape
                                 for key in statistics):
        return "no per-example statistics"
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
    if not _is_construction(path):
        return (*_read_released(path), None)
    remedy = _remedy(path)
    data = load_tensors(path / DATA_FILE, remedy)
    images, labels = (data.get("images"), data.get("labels")) if isinstance(data, dict) else (None, None)
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor) or images.dim() != 4 \
            or labels.dim() != 1 or len(images) != len(labels):
        raise DamagedFile(path / DATA_FILE, f"{shown(path / DATA_FILE)} is damaged (no images [N, C, H, W] with "
                                            f"labels [N]); {remedy}")
    return images.float(), labels.long(), derived_origin(path)


def derived_origin(path: Path) -> dict | None:
    """The dataset config of the source a construction was derived from (its derived.json), None for the
    authors' released files; DataError when `path` holds neither (one line saying what is there)."""
    if not _is_construction(path):
        return None
    meta_file = path / META_FILE
    remedy = _remedy(path)
    if not meta_file.is_file():
        raise DamagedFile(meta_file, f"{shown(meta_file)} is missing next to {DATA_FILE}; {remedy}")
    meta = read_json(meta_file, remedy)
    if not isinstance(meta, dict) or not isinstance(meta.get("source_dataset"), dict):
        raise DamagedFile(meta_file, f"{shown(meta_file)} is damaged (no source_dataset); {remedy}")
    return meta["source_dataset"]


def _is_construction(path: Path) -> bool:
    """True for an `advx construct` dir, False for a folder of released files; DataError for anything else."""
    if not path.is_dir():
        raise DataError(f"derived dataset {shown(path)} does not exist (dataset.path should be an `advx construct` "
                        f"dir)")
    if (path / DATA_FILE).is_file():
        return True
    if (path / RELEASED_IMAGES).is_file() and (path / RELEASED_LABELS).is_file():
        return False
    if (path / CHUNKS_DIR).is_dir():
        raise DataError(f"the construction in {shown(path)} did not finish; continue it with "
                        f"`advx construct resume={path}`")
    raise DataError(f"no derived dataset in {shown(path)}: expected {DATA_FILE} (advx construct) or "
                    f"{RELEASED_IMAGES} and {RELEASED_LABELS} (the authors' released format)")


def _remedy(path: Path) -> str:
    return (f"construct it again (`advx construct ...` into a new run dir; in a stage store, rerun the same "
            f"`advx reproduce`, which rebuilds damaged stages) instead of using {shown(path)}")


def _read_released(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' files: each a tensor, or a list of per-batch [b, ...] or per-example tensors."""
    def read(name: str) -> torch.Tensor:
        file = path / name
        value = load_tensors(file, "copy the released files again")
        if isinstance(value, list | tuple):
            if not value:
                raise DataError(f"{shown(file)} holds an empty list")
            if not all(isinstance(v, torch.Tensor) for v in value):
                raise DataError(f"{shown(file)} holds a list of {type(value[0]).__name__}, not tensors")
            try:
                value = torch.stack(value) if value[0].dim() in (0, 3) else torch.cat(value)
            except RuntimeError as error:  # tensors of differing shapes
                raise DataError(f"{shown(file)} holds tensors that do not stack: {first_line(error)}") from None
        if not isinstance(value, torch.Tensor):
            raise DataError(f"{shown(file)} holds a {type(value).__name__}, not tensors")
        return value

    images, labels = read(RELEASED_IMAGES), read(RELEASED_LABELS)
    if images.dim() != 4 or labels.dim() != 1 or len(images) != len(labels):
        raise DataError(f"released files in {shown(path)} do not match: images {tuple(images.shape)}, "
                        f"labels {tuple(labels.shape)} (expected [N, C, H, W] and [N])")
    images = images.float()
    if images.max() > 1.0 + 1e-6:  # saved as 0..255 pixel values
        images = images / 255
    return images, labels.long()
