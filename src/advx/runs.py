"""Run directories: atomic files, the environment record, and model checkpoints with their sidecar.

A training run dir holds (besides Hydra's `.hydra/` and the log):
  config.yaml        the resolved config
  env.json           versions, device, git sha, argv
  metrics.csv        one row per epoch (rewritten atomically each epoch)
  metrics.json       the final metrics
  checkpoint/last.pt the full training state, every epoch (resume)
  model.pt           the final weights (plain state_dict, loaded with weights_only=True)
  model.json         the sidecar: the registry name and arguments that rebuild the model
Every file is written to a temporary name and renamed, so a killed run never leaves a half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from advx.errors import CheckpointError, ConfigError, first_line
from advx.models import Classifier, build_model
from advx.provenance import code_version
from advx.schema import DatasetConfig

CONFIG_FILE, MODEL_FILE, SIDECAR_FILE, STATE_FILE = "config.yaml", "model.pt", "model.json", "checkpoint/last.pt"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make run dirs unreadable to collaborators
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(Path(path), text.encode())


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def save_torch(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def environment(runtime_info: dict) -> dict:
    """What produced a run: versions (advx's code version among them), machine, device and command line."""
    import torchvision

    from advx import __version__

    return {
        "advx": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "platform": platform.platform(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "code": code_version(), "argv": sys.argv, **runtime_info,
    }


def save_model(run_dir: Path, model: Classifier, spec: dict) -> None:
    """Write the final weights and the sidecar that rebuilds the model through the registry."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch(run_dir / MODEL_FILE, state)
    write_json(run_dir / SIDECAR_FILE, spec)


def load_model(run_dir: str | Path, device: torch.device) -> tuple[Classifier, dict]:
    """Rebuild a trained model from its run dir. Raises CheckpointError with one clear line on any problem."""
    run_dir = Path(run_dir)
    weights, sidecar = run_dir / MODEL_FILE, run_dir / SIDECAR_FILE
    if not run_dir.is_dir():
        raise CheckpointError(f"run dir {run_dir} does not exist")
    if not weights.is_file() or not sidecar.is_file():
        unfinished = (run_dir / STATE_FILE).is_file()
        hint = " (training did not finish; resume it with `advx train resume=DIR`)" if unfinished else ""
        raise CheckpointError(f"no trained model in {run_dir}: {MODEL_FILE} and {SIDECAR_FILE} expected{hint}")
    try:
        spec = json.loads(sidecar.read_text())
        model = build_model(spec["model"], spec["input_shape"], spec["num_classes"], spec["mean"], spec["std"],
                            **spec["hparams"])
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(f"unreadable sidecar {sidecar}: {error}") from None
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"unreadable checkpoint {weights}: {first_line(error)}") from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, AttributeError) as error:
        raise CheckpointError(f"checkpoint {weights} does not match its model {spec['model']}: "
                              f"{first_line(error)}") from None
    return model.to(device).eval(), spec


def trained_config(run: Path) -> dict:
    """The resolved config a run recorded in its config.yaml (plain YAML: no interpolations are left)."""
    config_file = Path(run) / CONFIG_FILE
    if not config_file.is_file():
        raise ConfigError(f"{run} is not a training run dir ({config_file} not found)")
    try:
        config = yaml.safe_load(config_file.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{config_file} is damaged ({first_line(error)}); rerun what made {run}") from None
    if not isinstance(config, dict) or not isinstance(config.get("dataset"), dict):
        raise ConfigError(f"{config_file} is damaged (no dataset section); rerun the command that made {run}")
    return config


def trained_dataset(run: Path, data_dir: str | None) -> DatasetConfig:
    """The dataset a run was trained on, from its resolved config (data_dir optionally replaced)."""
    section = dict(trained_config(run)["dataset"])
    if data_dir:
        section["data_dir"] = data_dir
    return DatasetConfig(**section)
