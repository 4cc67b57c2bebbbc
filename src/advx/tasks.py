"""Hydra task functions: the thin edge between a composed Hydra config and the plain job runners.

Each task builds the typed schema objects, finds its run dir from Hydra, and calls a runner in `jobs.py` (or
`reproduce.py`). Module-level, so launchers can pickle them. A user error (`AdvxError`) prints one line and
exits with code 2; an interrupt says how to continue.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from advx.errors import EXIT_BAD_INPUT, AdvxError
from advx.jobs import run_attack, run_construct, run_training
from advx.probe import run_probe
from advx.progress import console, print_error
from advx.reproduce import run_reproduce

BOOKKEEPING = (".hydra", "config.yaml", "env.json")  # what every run writes before its work starts (and its log)
RESULTS = ("checkpoint", "metrics.json", "model.pt", "chunks", "dataset.pt", "report.md")  # work worth keeping


def user_errors(task):
    """Report an AdvxError (or an OSError: a file that cannot be read or written) as one line on stderr and exit
    2, no traceback. A new run that failed before producing anything leaves no run dir behind."""

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except (AdvxError, OSError) as error:
            if not cfg.get("resume"):
                discard_if_empty(run_dir(), HydraConfig.get().job.name)
            print_error(error)
            sys.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            name = HydraConfig.get().job.name
            hint = (f"advx {name} resume={run_dir()}" if name in ("train", "construct")
                    else "the same command (finished stages are reused)")
            console.print(f"[yellow]interrupted[/]; continue with: {hint}", soft_wrap=True)
            sys.exit(130)

    return wrapper


def discard_if_empty(out: Path, job_name: str) -> None:
    """Remove what this run wrote into `out` when it holds no results, then `out` and its parents below the
    working dir while they are empty (a dir the user named may hold other files: those stay)."""
    if any((out / name).exists() for name in RESULTS):
        return
    for name in (*BOOKKEEPING, f"{job_name}.log"):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # rmdir removes only empty dirs: this run's, then Hydra's parents of it
        for folder in (out, *out.parents):
            if folder == Path.cwd():
                break
            folder.rmdir()


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def from_hydra(cfg: DictConfig) -> tuple[Any, Path, str]:
    """The typed config, the run dir and the resolved YAML of the Hydra job in progress."""
    return OmegaConf.to_object(cfg), run_dir(), OmegaConf.to_yaml(cfg, resolve=True)


@user_errors
def train_task(cfg: DictConfig) -> dict:
    """`advx train`."""
    return run_training(*from_hydra(cfg))


@user_errors
def attack_task(cfg: DictConfig) -> dict:
    """`advx attack`."""
    return run_attack(*from_hydra(cfg))


@user_errors
def construct_task(cfg: DictConfig) -> dict:
    """`advx construct <kind>`."""
    return run_construct(*from_hydra(cfg))


@user_errors
def probe_task(cfg: DictConfig) -> dict:
    """`advx probe`."""
    return run_probe(*from_hydra(cfg))


@user_errors
def reproduce_task(cfg: DictConfig) -> dict:
    """`advx reproduce <paper>`."""
    return run_reproduce(*from_hydra(cfg))
