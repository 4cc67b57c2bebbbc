"""Checks made before a job's run dir exists, so a job that cannot run leaves nothing behind.

`hydra_bridge.run` calls `check_job` for every job of a command (every job of a sweep, before the first one
starts) and `check_output_dir` for the dir the command writes to. They catch what the typed config alone cannot:
a device this machine lacks, dataset files that are not there, a model that does not fit its data (built on
PyTorch's meta device, so no memory or time is spent), run dirs without a readable model, and output paths that
cannot be written. Plain Python, no Hydra; each problem is one `AdvxError` line.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from advx.data import describe
from advx.errors import ConfigError, first_line, shown
from advx.models import build_model
from advx.runs import STATE_FILE, load_model, load_tensors, trained_dataset
from advx.runtime import resolve_device
from advx.schema import DATASET_CLASSES, MODEL_SCHEMAS, DatasetConfig, ModelConfig

RUN_FILES = (".hydra", "config.yaml", "metrics.json", "model.pt", "checkpoint", "chunks", "dataset.pt")  # a run's


def check_job(command: str, typed: Any) -> None:
    """Everything job `typed` of `command` (train | attack | construct | probe | reproduce) needs, short of
    running."""
    resolve_device(typed.runtime.device)
    if command == "train":
        _check_model_and_data(json.dumps([asdict(typed.model), asdict(typed.dataset)]))
        if typed.resume and (Path(typed.resume) / STATE_FILE).is_file():
            load_tensors(Path(typed.resume) / STATE_FILE, "the run cannot be resumed; start it again in a new run dir")
    elif command == "attack":
        _check_run(typed.run, "run")
        if typed.source:
            _check_run(typed.source, "source")
        dataset = trained_dataset(Path(typed.run), typed.data_dir)
        describe(replace(dataset, name="derived", path=typed.derived) if typed.derived else dataset)
    elif command == "probe":
        _check_run(typed.run, "run")
        describe(typed.dataset or trained_dataset(Path(typed.run), typed.data_dir))
    elif command == "construct":
        _check_run(typed.source, "source")
        describe(trained_dataset(Path(typed.source), typed.data_dir))
    elif command == "reproduce":
        name = getattr(typed.paper.scales[typed.scale], "dataset", None)  # None: the paper makes its own data
        if name in DATASET_CLASSES:
            describe(DatasetConfig(name=name, data_dir=typed.data_dir))
        check_output_dir(Path(typed.store), "store")


def check_model_fits(model: ModelConfig, dataset: str, shape: tuple[int, ...], num_classes: int) -> None:
    """ConfigError unless `model` builds for inputs [B, *shape] with `num_classes` classes and runs forward
    (on the meta device: shapes only)."""
    hparams = {k: v for k, v in asdict(model).items() if k != "name"}
    channels = shape[0] if len(shape) == 3 else 1
    try:
        with torch.device("meta"):
            net = build_model(model.name, shape, num_classes, [0.0] * channels, [1.0] * channels, **hparams)
            net.eval()(torch.zeros(2, *shape))
    except (RuntimeError, IndexError, ValueError, TypeError) as error:
        raise ConfigError(f"model={model.name} does not fit dataset={dataset} (inputs {tuple(shape)}, "
                          f"{num_classes} classes): {first_line(error)}") from None


@functools.lru_cache(maxsize=256)
def _check_model_and_data(sections: str) -> None:
    """The data files are there and the model fits them (cached: a sweep repeats the same pairs)."""
    model, dataset = json.loads(sections)
    shape, classes = describe(DatasetConfig(**dataset))
    _check_fit(json.dumps(model), dataset["name"], shape, classes)


@functools.lru_cache(maxsize=256)
def _check_fit(model: str, dataset: str, shape: tuple[int, ...], num_classes: int) -> None:
    fields = json.loads(model)
    check_model_fits(MODEL_SCHEMAS[fields["name"]](**fields), dataset, shape, num_classes)


@functools.lru_cache(maxsize=64)
def _check_run(run: str, key: str) -> None:
    """A run dir with a model that loads (cached: a sweep attacks the same run many times)."""
    load_model(Path(run), torch.device("cpu"))


def holds_run(path: Path) -> bool:
    """True when `path` is a dir some advx or Hydra run wrote into."""
    return path.is_dir() and any((path / name).exists() for name in RUN_FILES)


def check_output_dir(path: Path, key: str) -> None:
    """ConfigError unless a run can write into `path` (named by setting `key`): not a file, not under a file,
    a name the filesystem allows, on a writable filesystem. Creates nothing: it probes the nearest existing
    ancestor."""
    path = Path(os.path.abspath(path))
    try:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{key}={shown(path)} is a file, not a directory; choose another {key}")
        ancestor = path
        while not ancestor.exists():
            ancestor = ancestor.parent
    except OSError as error:
        raise ConfigError(f"{key}={shown(path)} cannot be used: {error.strerror}") from None
    if not ancestor.is_dir():
        raise ConfigError(f"{key}={shown(path)} lies under {shown(ancestor)}, which is a file; choose another {key}")
    _check_names(path, ancestor, key)
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as error:
        reason = "a read-only filesystem" if error.errno == errno.EROFS else error.strerror
        raise ConfigError(f"{key}={shown(path)} cannot be written: creating a file in {shown(ancestor)} fails "
                          f"({reason}); choose another {key}") from None


def _check_names(path: Path, ancestor: Path, key: str) -> None:
    name_max = os.pathconf(ancestor, "PC_NAME_MAX")
    path_max = os.pathconf(ancestor, "PC_PATH_MAX")
    long = [part for part in path.parts if len(part.encode()) > name_max]
    if long:
        raise ConfigError(f"{key}={shown(path)} has a name longer than the filesystem allows ({name_max} bytes): "
                          f"{shown(long[0], 60)}")
    if len(str(path).encode()) + 64 > path_max:  # room for the files a run writes inside it
        raise ConfigError(f"{key}={shown(path)} is too long for the filesystem ({path_max} bytes at most)")
