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
import pickle
import platform
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from advx.errors import CheckpointError, ConfigError, DamagedFile, first_line, shown
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


ZIP_MAGIC, PICKLE_MARK = b"PK\x03\x04", 0x80  # torch.save's zip format; a pickle stream's first byte


def load_tensors(path: Path, remedy: str) -> Any:
    """What torch.save wrote at `path` (tensors, and dicts / lists / numbers of them), on the CPU.

    Loaded with weights_only=True, so a file never runs code. Anything else raises DamagedFile with one line
    naming the file, what is wrong with it and `remedy` (what to do): an empty or truncated file, bytes that are
    not a torch file, or a file holding Python objects (plain pickling), which advx never unpickles.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as error:
        raise DamagedFile(path, f"cannot read {shown(path)}: {error.strerror}; {remedy}") from None
    if not head:
        raise DamagedFile(path, f"{shown(path)} is empty (a save or copy that did not finish); {remedy}")
    if head != ZIP_MAGIC and head[0] != PICKLE_MARK:
        raise DamagedFile(path, f"{shown(path)} is not a torch file (damaged, or another format); {remedy}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on foreign files: the error says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DamagedFile(path, f"{shown(path)} is not a plain tensor checkpoint: it holds Python objects (saved "
                                f"with plain pickling?), and advx never unpickles those since that can run code; "
                                f"{remedy}") from None
    except Exception:  # torch raises RuntimeError, EOFError, ValueError ... for truncated or corrupt archives
        raise DamagedFile(path, f"{shown(path)} is damaged (truncated or corrupt); {remedy}") from None


def read_json(path: Path, remedy: str) -> Any:
    """A JSON file advx wrote; DamagedFile (one line naming it, with `remedy`) if it cannot be parsed."""
    return _parse(Path(path), json.loads, (json.JSONDecodeError, UnicodeDecodeError), remedy)


def read_yaml(path: Path, remedy: str) -> Any:
    """A YAML file (config.yaml, .hydra/overrides.yaml), parsed safely; DamagedFile if it cannot be parsed."""
    return _parse(Path(path), yaml.safe_load, (yaml.YAMLError, UnicodeDecodeError), remedy)


def _parse(path: Path, parse: Callable[[str], Any], errors: tuple[type[Exception], ...], remedy: str) -> Any:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DamagedFile(path, f"cannot read {shown(path)}: {error.strerror}; {remedy}") from None
    try:
        return parse(data.decode())
    except errors as error:
        raise DamagedFile(path, f"{shown(path)} is damaged ({first_line(error)}); {remedy}") from None


def read_history(run_dir: Path) -> list[dict[str, str]]:
    """A training run's metrics.csv: one row per epoch (values as text); DamagedFile if it does not read back."""
    path, remedy = run_dir / "metrics.csv", f"rerun the command that made {shown(run_dir)}"
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DamagedFile(path, f"cannot read {shown(path)} ({first_line(error)}); {remedy}") from None
    if not rows or not all((row.get("epoch") or "").isdigit() for row in rows):
        raise DamagedFile(path, f"{shown(path)} is damaged (no rows of numbered epochs); {remedy}")
    return rows


def saved_overrides(run_dir: Path, remedy: str) -> list[str]:
    """The overrides Hydra saved for a run (.hydra/overrides.yaml; none without the file); DamagedFile when they
    are not a list of strings (an empty file is a truncated one: Hydra writes `[]` for none)."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    saved = read_yaml(path, remedy)
    if not isinstance(saved, list) or not all(isinstance(o, str) for o in saved):
        raise DamagedFile(path, f"{shown(path)} is damaged (not a list of overrides); {remedy}")
    return saved


def state_mismatch(model: torch.nn.Module, state: Any) -> str | None:
    """Why `state` cannot load into `model` (the first differing keys and shapes), or None when it fits."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return "it is not a state dict of tensors"
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    problems = [f"{k} missing" for k in expected if k not in found][:3]
    problems += [f"unexpected {k}" for k in found if k not in expected][:3]
    problems += [f"{k} {found[k]} vs {expected[k]} expected" for k in expected
                 if k in found and found[k] != expected[k]][:3]
    return ", ".join(problems[:3]) or None


def load_model(run_dir: str | Path, device: torch.device) -> tuple[Classifier, dict]:
    """Rebuild a trained model from its run dir. Raises CheckpointError / DamagedFile with one clear line."""
    run_dir = Path(run_dir)
    weights, sidecar = run_dir / MODEL_FILE, run_dir / SIDECAR_FILE
    if not run_dir.is_dir():
        raise CheckpointError(f"run dir {shown(run_dir)} does not exist")
    if not weights.is_file() or not sidecar.is_file():
        unfinished = (run_dir / STATE_FILE).is_file()
        hint = " (training did not finish; resume it with `advx train resume=DIR`)" if unfinished else ""
        raise CheckpointError(f"no trained model in {shown(run_dir)}: {MODEL_FILE} and {SIDECAR_FILE} "
                              f"expected{hint}")
    remedy = f"retrain the model (the run dir {shown(run_dir)} cannot be used)"
    spec = read_json(sidecar, remedy)
    try:
        model = build_model(spec["model"], spec["input_shape"], spec["num_classes"], spec["mean"], spec["std"],
                            **spec["hparams"])
    except (KeyError, TypeError, ValueError) as error:
        raise DamagedFile(sidecar, f"{shown(sidecar)} does not describe a model ({first_line(error)}); "
                                   f"{remedy}") from None
    state = load_tensors(weights, remedy)
    problem = state_mismatch(model, state)
    if problem:
        raise CheckpointError(f"checkpoint {shown(weights)} does not match its model {spec['model']} "
                              f"({SIDECAR_FILE}): {problem}")
    model.load_state_dict(state)
    return model.to(device).eval(), spec


def trained_config(run: Path) -> dict:
    """The resolved config a run recorded in its config.yaml (plain YAML: no interpolations are left)."""
    config_file = Path(run) / CONFIG_FILE
    if not config_file.is_file():
        raise ConfigError(f"{shown(run)} is not a training run dir ({CONFIG_FILE} not found)")
    config = read_yaml(config_file, f"rerun the command that made {shown(run)}")
    if not isinstance(config, dict) or not isinstance(config.get("dataset"), dict):
        raise DamagedFile(config_file, f"{shown(config_file)} is damaged (no dataset section); rerun the command "
                                       f"that made {shown(run)}")
    return config


def trained_dataset(run: Path, data_dir: str | None) -> DatasetConfig:
    """The dataset a run was trained on, from its resolved config (data_dir optionally replaced)."""
    section = dict(trained_config(run)["dataset"])
    if data_dir:
        section["data_dir"] = data_dir
    try:
        return DatasetConfig(**section)
    except TypeError as error:  # a hand-edited section with keys the schema does not know
        config_file = Path(run) / CONFIG_FILE
        raise DamagedFile(config_file, f"{shown(config_file)} is damaged ({first_line(error)}); rerun the command "
                                       f"that made {shown(run)}") from None
