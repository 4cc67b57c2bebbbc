"""The bridge from a Typer command to a Hydra app: `advx train a=b -m` -> `hydra.main(...)(train_task)()`.

Typer owns the sub-commands; Hydra owns configs, sweeps (`-m`), launchers and run dirs. The bridge
1. orders the arguments for Hydra's argparse (its flags first, then the user's overrides),
2. validates every job of the sweep before anything runs, by composing its config with the Compose API and
   building the typed schema objects; any problem becomes one `ConfigError` line (exit 2, no traceback),
3. rebuilds `sys.argv` and calls the public `hydra.main` with the absolute `conf/` dir.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from advx import resources
from advx.errors import ConfigError, first_line
from advx.papers import PAPERS
from advx.schema import (
    MODEL_SCHEMAS,
    AttackConfig,
    AttackTaskConfig,
    ConstructConfig,
    ConstructTaskConfig,
    DatasetConfig,
    OptimConfig,
    RegimeConfig,
    ReproduceTaskConfig,
    RuntimeConfig,
    TrainTaskConfig,
)

CONF_DIR = resources.conf_dir()  # $ADVX_CONF_DIR, the checkout's conf/, or the copy in an installed wheel
GROUPS = ("dataset", "model", "optim", "regime", "attack", "runtime", "experiment", "paper", "construct")
RESUMABLE = ("train", "construct")  # commands whose run dir can be continued with resume=<dir>
# Hydra's own flags and whether each takes a value; they must precede the overrides.
HYDRA_FLAGS = {
    "-m": False, "--multirun": False, "--resolve": False, "--hydra-help": False,
    "--cfg": True, "-c": True, "--package": True, "-p": True, "--info": True, "-i": True,
}
MAX_VALIDATED_JOBS = 256  # composing one job takes ~20 ms; beyond this, only the first jobs are checked


def register_schemas() -> None:
    """Store the schemas where the YAML files in conf/ extend them (`/schema/<group>/<name>@_here_`)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainTaskConfig)
    store.store(name="attack_schema", node=AttackTaskConfig)
    store.store(name="reproduce_schema", node=ReproduceTaskConfig)
    store.store(name="construct_schema", node=ConstructTaskConfig)
    for name, module in PAPERS.items():
        store.store(group="schema/paper", name=name, node=module.Config)
    for group, schema in (("dataset", DatasetConfig), ("optim", OptimConfig), ("attack", AttackConfig),
                          ("regime", RegimeConfig), ("runtime", RuntimeConfig), ("construct", ConstructConfig)):
        store.store(group=f"schema/{group}", name="base", node=schema)
    for name, schema in MODEL_SCHEMAS.items():
        store.store(group="schema/model", name=name, node=schema)


register_schemas()


def group_options(group: str) -> list[str]:
    """The option names of a config group, from the YAML files in conf/<group>/."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def split_hydra_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """Split CLI arguments into Hydra flags (with their values) and overrides, keeping each order."""
    flags: list[str] = []
    overrides: list[str] = []
    items = iter(args)
    for arg in items:
        name = arg.split("=", 1)[0]
        if name in HYDRA_FLAGS:
            flags.append(arg)
            if HYDRA_FLAGS[name] and "=" not in arg:
                value = next(items, None)
                if value is None:
                    raise ConfigError(f"{arg} needs a value")
                flags.append(value)
        elif arg.startswith("-"):
            raise ConfigError(f"unknown option {arg!r}; options are Hydra's -m/--multirun, --cfg, --resolve, --info")
        else:
            overrides.append(arg)
    return flags, overrides


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """The override list of every job in a basic sweep (cartesian product of comma lists and ranges)."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as error:
        raise ConfigError(f"cannot parse override: {first_line(error)}") from None
    axes: list[list[str]] = []
    for override in parsed:
        if override.is_sweep_override():
            key = override.get_key_element()
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([override.input_line])
    return [list(job) for job in itertools.islice(itertools.product(*axes), MAX_VALIDATED_JOBS)]


def _check_group_choices(overrides: list[str]) -> None:
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~").removeprefix("override ")
        if key in GROUPS and value and value != "null":
            options = group_options(key)
            if value not in options:
                raise ConfigError(f"unknown {key} option {value!r}; valid options: {', '.join(options)}")


def _explain_composition_error(config_name: str, overrides: list[str], error: Exception) -> str:
    message = first_line(error)
    cause = error.__cause__
    if message.startswith("Could not override '"):
        key = message.split("'")[1]
        parent, _, _ = key.rpartition(".")
        known = _keys_under(config_name, [o for o in overrides if not o.startswith(key + "=")], parent)
        where = f"under '{parent}'" if parent else "at the top level"
        return f"unknown config key '{key}'; valid keys {where}: {', '.join(known)}"
    if message.startswith("Error merging override") and cause is not None:
        return f"{message.removeprefix('Error merging override ')}: {first_line(cause)}"
    if cause is not None and isinstance(cause, OmegaConfBaseException):
        return f"{message}: {first_line(cause)}"
    return message


def _keys_under(config_name: str, overrides: list[str], parent: str) -> list[str]:
    try:
        cfg = compose_config(config_name, overrides)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        return sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []
    except Exception:  # the explanation is best effort; the error itself is reported regardless
        return []


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose a config with the Compose API (also inside a running Hydra app, which owns the global state)."""
    _check_group_choices(overrides)
    try:
        if GlobalHydra.instance().is_initialized():
            return compose(config_name, overrides=overrides)
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            return compose(config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(_explain_composition_error(config_name, overrides, error)) from None


def compose_job(config_name: str, overrides: list[str]) -> Any:
    """Compose one job's config and build its typed schema object (range checks run here)."""
    return typed_config(compose_config(config_name, overrides))


def typed_config(cfg: DictConfig) -> Any:
    """The schema dataclasses of a composed config; missing values and range errors become ConfigError."""
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as error:
        if "missing mandatory value" in str(error).lower():
            key = getattr(error, "full_key", None) or str(error).rsplit(":", 1)[-1].strip()
            raise ConfigError(f"missing a value for '{key}'; set it with {key}=...") from None
        raise ConfigError(first_line(error)) from None


def resume_overrides(run_dir: str, extra: list[str]) -> list[str]:
    """Overrides that continue the run in `run_dir`: its own saved overrides, then `extra`, in its dir."""
    saved = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise ConfigError(f"resume={run_dir}: not a run dir ({saved} not found)")
    previous = [o for o in OmegaConf.load(saved) if not str(o).startswith(("resume=", "hydra.run.dir="))]
    return [*map(str, previous), *extra, f"hydra.run.dir={Path(run_dir).resolve()}", f"resume={run_dir}"]


def run(config_name: str, task: Callable[[Any], Any], args: list[str]) -> None:
    """Validate `args` for the `config_name` app and run `task` through `hydra.main` (single run or -m)."""
    flags, overrides = split_hydra_flags(args)
    resume = [o for o in overrides if o.startswith("resume=")]
    if resume and config_name in RESUMABLE:
        overrides = resume_overrides(resume[-1].split("=", 1)[1], [o for o in overrides if o not in resume])
    for job in expand_sweep(overrides):
        compose_job(config_name, job)
    argv = sys.argv
    sys.argv = [f"advx-{config_name}", *flags, *overrides]
    try:
        hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(task)()
    finally:
        sys.argv = argv

