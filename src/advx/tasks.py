"""Hydra task functions: the thin edge between a composed Hydra config and the plain job runners.

Each task builds the typed schema objects, finds its run dir from Hydra, and calls a runner in `jobs.py` (or
`reproduce.py`). Module-level, so launchers can pickle them. A user error (`AdvxError`) prints one line and
exits with code 2; an interrupt says how to continue.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from advx.errors import EXIT_BAD_INPUT, AdvxError
from advx.jobs import run_attack, run_construct, run_training
from advx.progress import console
from advx.reproduce import run_reproduce


def user_errors(task):
    """Report an AdvxError as one line on stderr and exit 2 (no traceback)."""

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except AdvxError as error:
            console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            sys.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            name = HydraConfig.get().job.name
            hint = (f"advx {name} resume={run_dir()}" if name in ("train", "construct")
                    else "the same command (finished stages are reused)")
            console.print(f"[yellow]interrupted[/]; continue with: {hint}", soft_wrap=True)
            sys.exit(130)

    return wrapper


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
def reproduce_task(cfg: DictConfig) -> dict:
    """`advx reproduce <paper>`."""
    return run_reproduce(*from_hydra(cfg))
