"""The bridge from a Typer command to a Hydra app: `advx train a=b -m` -> `hydra.main(...)(train_task)()`.

Typer owns the sub-commands; Hydra owns configs, sweeps (`-m`), launchers and run dirs. The bridge
1. orders the arguments for Hydra's argparse (its flags first, then the user's overrides),
2. validates every job of the sweep before anything runs, by composing its config with the Compose API and
   building the typed schema objects; any problem becomes one `ConfigError` line (exit 2, no traceback),
3. rebuilds `sys.argv` and calls the public `hydra.main` with the absolute `conf/` dir.
"""

from __future__ import annotations

import copy
import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.markup import escape

from advx import resources
from advx.errors import ConfigError, first_line, shown
from advx.papers import PAPERS
from advx.preflight import check_job, check_output_dir, holds_run
from advx.progress import console
from advx.runs import load_model, load_tensors, read_json, saved_overrides
from advx.schema import (
    MODEL_SCHEMAS,
    AttackConfig,
    AttackTaskConfig,
    ConstructConfig,
    ConstructTaskConfig,
    DatasetConfig,
    OptimConfig,
    ProbeTaskConfig,
    RegimeConfig,
    ReproduceTaskConfig,
    RuntimeConfig,
    TrainTaskConfig,
)

try:  # how Hydra applies value overrides after composing; private, so a missing one means: compose every job
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    apply_value_overrides = ConfigLoaderImpl._apply_overrides_to_config
except (ImportError, AttributeError):  # pragma: no cover
    def apply_value_overrides(overrides, cfg):
        raise NotImplementedError

CONF_DIR = resources.conf_dir()  # $ADVX_CONF_DIR, the checkout's conf/, or the copy in an installed wheel
GROUPS = ("dataset", "model", "optim", "regime", "attack", "runtime", "experiment", "paper", "construct")
RESUMABLE = ("train", "construct")  # commands whose run dir can be continued with resume=<dir>
# Hydra's own flags and whether each takes a value; they must precede the overrides.
HYDRA_FLAGS = {
    "-m": False, "--multirun": False, "--resolve": False, "--hydra-help": False,
    "--cfg": True, "-c": True, "--package": True, "-p": True, "--info": True, "-i": True,
}
MAX_KEY_LENGTH = 200  # longer "keys" are typos or pasted paths (Hydra would look them up as config files)
RESUME_MAY_CHANGE = ("runtime.", "dataset.data_dir", "data_dir")  # where and how a resumed run runs, not what it
# computes: any other key that differs from the saved run refuses the resume


def register_schemas() -> None:
    """Store the schemas where the YAML files in conf/ extend them (`/schema/<group>/<name>@_here_`)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainTaskConfig)
    store.store(name="attack_schema", node=AttackTaskConfig)
    store.store(name="reproduce_schema", node=ReproduceTaskConfig)
    store.store(name="construct_schema", node=ConstructTaskConfig)
    store.store(name="probe_schema", node=ProbeTaskConfig)
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


def expand_sweep(overrides: list[str], multirun: bool = True) -> list[list[str]]:
    """The override list of every job in a basic sweep (cartesian product of comma lists and ranges); without
    -m (`multirun` False) a sweep override is an error."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as error:
        raise ConfigError(f"cannot parse override: {first_line(error)}") from None
    axes: list[list[str]] = []
    for override in parsed:
        if len(override.key_or_group) > MAX_KEY_LENGTH:
            raise ConfigError(f"unknown config key '{shown(override.key_or_group, 80)}': no key is "
                              f"{len(override.key_or_group)} characters long")
        if override.is_sweep_override():
            key = override.get_key_element()
            if not multirun:
                raise ConfigError(f"{override.input_line} is a sweep: add -m to run one job per value, or write a "
                                  f"list as {key}=[...]")
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([override.input_line])
    return [list(job) for job in itertools.product(*axes)]


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
        return _unknown_key(config_name, [o for o in overrides if not o.startswith(key + "=")], key)
    if message.startswith("Error merging override") and cause is not None:
        return f"{message.removeprefix('Error merging override ')}: {first_line(cause)}"
    if cause is not None and isinstance(cause, OmegaConfBaseException):
        return f"{message}: {first_line(cause)}"
    return message


def _unknown_key(config_name: str, overrides: list[str], key: str) -> str:
    """'unknown config key' with the keys that do exist under the nearest existing parent of `key`."""
    try:
        cfg = compose_config(config_name, overrides)
    except ConfigError:  # another override is wrong too: that one is reported once this one is fixed
        return f"unknown config key '{shown(key, 80)}'; see the valid keys with `advx config {config_name}`"
    if key.startswith("hydra."):
        return (f"unknown Hydra setting '{shown(key, 80)}' (a launcher's keys exist once it is chosen, e.g. "
                f"hydra/launcher=local)")
    parent = key
    while parent:
        parent = parent.rpartition(".")[0]
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig):
            known = ", ".join(sorted(str(k) for k in node.keys()))
            where = f"under '{parent}'" if parent else "at the top level"
            return f"unknown config key '{shown(key, 80)}'; valid keys {where}: {known}"
    return f"unknown config key '{shown(key, 80)}'"


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


def compose_jobs(config_name: str, jobs: list[list[str]]) -> list[Any]:
    """The typed config of every job of a sweep, fast enough for thousands of jobs.

    Jobs that make the same config-group choices share one Hydra composition; each job's value overrides are
    then applied to a copy the way Hydra itself applies them after composing (`_apply_overrides_to_config`).
    Whenever that shortcut objects, the job is composed in full, which gives the same config or the one-line
    explanation of its error.
    """
    parser = OverridesParser.create()
    parsed_lines: dict[str, Override] = {}  # jobs repeat most of their overrides: parse each line once
    bases: dict[tuple[str, ...], DictConfig] = {}
    typed = []
    for job in jobs:
        for line in job:
            if line not in parsed_lines:
                parsed_lines[line] = parser.parse_override(line)
        parsed = [parsed_lines[line] for line in job]
        choices = tuple(o.input_line for o in parsed if _chooses_configs(o))
        if choices not in bases:
            bases[choices] = compose_config(config_name, list(choices))
        cfg = copy.deepcopy(bases[choices])
        try:
            apply_value_overrides([o for o in parsed if not _chooses_configs(o)], cfg)
        except Exception:  # the full composition names the problem (or shows the shortcut was wrong)
            cfg = compose_config(config_name, job)
        typed.append(typed_config(cfg))
    return typed


def _chooses_configs(override: Override) -> bool:
    """True for an override that picks a config (model=cnn, hydra/launcher=...) or sets Hydra's own keys."""
    key = override.key_or_group
    return key in GROUPS or "/" in key or key.split(".")[0] == "hydra" or override.package is not None


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


def resume_overrides(config_name: str, run_dir: str, extra: list[str]) -> list[str]:
    """Overrides that continue the run in `run_dir`: its own saved overrides, then `extra`, in its dir.

    A resume continues the run as it was configured: `extra` may change where and how it runs (runtime.*,
    data_dir), and anything else that would change its config is refused before the run dir is touched.
    """
    path = Path(run_dir)
    saved_file = path / ".hydra" / "overrides.yaml"
    if not saved_file.is_file():
        raise ConfigError(f"resume={shown(run_dir)}: not a run dir ({shown(saved_file)} not found)")
    job = _job_name(path)
    if job != config_name:
        raise ConfigError(f"resume={shown(run_dir)} is an `advx {job}` run; continue it with "
                          f"`advx {job} resume={shown(run_dir)}`")
    saved = saved_overrides(path, "the run cannot be resumed; start it again in a new run dir")
    previous = [o for o in saved if not o.startswith(("resume=", "hydra.run.dir="))]
    if extra:
        before = _flat(compose_config(config_name, previous))
        after = _flat(compose_config(config_name, [*previous, *extra]))
        changed = [k for k in sorted(before.keys() | after.keys())
                   if before.get(k) != after.get(k) and not k.startswith(RESUME_MAY_CHANGE)]
        groups = [k.removesuffix(".name") for k in changed if k.endswith(".name")]  # model=maxout: say `model`
        changed = groups + [k for k in changed if not k.startswith(tuple(f"{g}." for g in groups))]
        if changed:
            raise ConfigError(f"resume={shown(run_dir)} continues the run as it was configured, so "
                              f"{', '.join(changed[:3])} cannot change; start a new run for that")
    return [*previous, *extra, f"hydra.run.dir={path.resolve()}", f"resume={run_dir}"]


def _job_name(run_dir: Path) -> str:
    """The command that made a run dir, from Hydra's record (.hydra/hydra.yaml); unknown when unreadable."""
    record = run_dir / ".hydra" / "hydra.yaml"
    try:
        return str(yaml.safe_load(record.read_text())["hydra"]["job"]["name"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return "unknown"


def _flat(cfg: DictConfig) -> dict[str, Any]:
    """A composed config as {dotted key: value}."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix.rstrip(".")] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def finished(config_name: str, run_dir: Path) -> bool:
    """True when a train or construct run dir holds its final results (resuming it has nothing to do); a
    result that is there but damaged raises DamagedFile naming it."""
    results = {"train": ("metrics.json", "model.pt"), "construct": ("metrics.json", "dataset.pt")}[config_name]
    if not all((run_dir / name).is_file() for name in results):
        return False
    remedy = f"the results in {shown(run_dir)} cannot be used; run it again in a new run dir"
    read_json(run_dir / "metrics.json", remedy)
    if config_name == "train":
        load_model(run_dir, torch.device("cpu"))
    else:
        load_tensors(run_dir / "dataset.pt", remedy)
    return True


def output_dir(config_name: str, overrides: list[str], multirun: bool) -> tuple[Path, bool]:
    """The dir Hydra will write to (hydra.run.dir, or hydra.sweep.dir with -m) and whether the user named it."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    named = any(o.startswith(f"{key}=") for o in overrides)
    try:
        if GlobalHydra.instance().is_initialized():
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
        else:
            with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
                cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
        return Path(str(OmegaConf.select(cfg, key))), named
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(f"{key}: {first_line(error)}") from None


def check_output(config_name: str, overrides: list[str], multirun: bool, resuming: bool) -> None:
    """Refuse an output dir that cannot be written, and a new run into a dir that holds a run (it would mix
    with or overwrite that run's files). Reproductions write to one stable dir per paper by design."""
    path, named = output_dir(config_name, overrides, multirun)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    check_output_dir(path, key)
    if named and not resuming and config_name != "reproduce":
        taken = holds_run(path) or (multirun and path.is_dir() and any(holds_run(job) for job in path.iterdir()))
        if taken:
            hint = f"continue it with `advx {config_name} resume={shown(path)}` or " if (
                config_name in RESUMABLE and not multirun) else ""
            raise ConfigError(f"{key}={shown(path)} already holds a run; {hint}choose a new {key}")


def run(config_name: str, task: Callable[[Any], Any], args: list[str]) -> None:
    """Validate `args` for the `config_name` app and run `task` through `hydra.main` (single run or -m).

    Before Hydra creates any dir: every job of a sweep is composed into its typed config (range checks) and
    checked by `preflight.check_job` (device, data files, model vs data, readable checkpoints); the output dir
    is checked; a resume is checked against the saved run (and a finished one is left alone).
    """
    flags, overrides = split_hydra_flags(args)
    multirun = any(flag in ("-m", "--multirun") for flag in flags)
    inspecting = any(flag in ("--cfg", "-c", "--info", "-i", "--hydra-help") for flag in flags)
    if inspecting and multirun:
        raise ConfigError("a config is shown for one job at a time: drop -m (and the comma lists)")
    resume = [o for o in overrides if o.startswith("resume=")]
    resuming = bool(resume) and config_name in RESUMABLE
    if resuming:
        run_dir = resume[-1].split("=", 1)[1]
        overrides = resume_overrides(config_name, run_dir, [o for o in overrides if o not in resume])
        if finished(config_name, Path(run_dir)) and not inspecting:
            console.print(escape(f"{shown(run_dir)} is finished; nothing to do"), highlight=False, soft_wrap=True)
            return
    jobs = expand_sweep(overrides, multirun)
    typed_jobs = compose_jobs(config_name, jobs)
    if not inspecting:
        for typed in typed_jobs:
            check_job(config_name, typed)
        check_output(config_name, jobs[0], multirun, resuming)  # the sweep dir does not depend on swept values
    argv = sys.argv
    sys.argv = [f"advx-{config_name}", *flags, *overrides]
    try:
        hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(task)()
    finally:
        sys.argv = argv
