"""The stage store: `advx train`, `construct`, `probe` and `attack` runs keyed by everything they depend on.

A reproduction is a graph of stages. Each stage is an ordinary run, composed from the same configs as the CLI,
in a dir of one store shared by every reproduction (`outputs/stages/<name>-<key>` by default), so li2023 can
reuse ilyas2019's constructions and a seed sweep shares what does not depend on the seed. The key is a digest of
  - the resolved config, with progress bars left out and every path (data_dir, run=, source=, derived=,
    dataset.path=) replaced by the digest of what it points to,
  - those digests: the data files read (MNIST's IDX files, ...), the upstream model weights and sidecar, the
    upstream derived dataset; an upstream stage's digest includes its own unique id, so a retrained upstream
    stage always reruns everything below it, even when its weights come out bit for bit the same,
  - the code: advx's version and a digest of its source files (the git sha and a dirty flag are recorded too).
A dir holding `stage.json` (written last) is finished and reused; any other dir of that key is resumed (training
from its last epoch, construction from its last chunk) or rerun. Before a finished stage is reused, what
reproductions read from it is read back (`_damaged`); a stage whose files do not read back (truncated, emptied,
overwritten) is removed and rerun with a warning, as is an unfinished one whose saved progress does not load.
With `reuse="any"` a finished stage with the same config and inputs is reused even when other code made it; the
report lists it with that code's version.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from advx.data import dataset_files
from advx.derived import DATA_FILE, derived_origin, read_derived
from advx.errors import AdvxError, ConfigError, DamagedFile, shown
from advx.jobs import run_attack, run_construct, run_training
from advx.probe import run_probe
from advx.provenance import code_version, describe_code, file_digest
from advx.runs import STATE_FILE, load_model, load_tensors, read_history, read_json, trained_dataset, write_json
from advx.timing import section
from advx.train import STATE_KEYS

log = logging.getLogger("advx")
RECORD = "stage.json"
ARTIFACTS = ("model.pt", "model.json", "dataset.pt", "derived.json")  # what downstream stages read from a run
REUSE = ("exact", "any")
RERUN = "the stage is rerun"  # the remedy in DamagedFile lines about a stage's own files

# compose(command, overrides) -> (typed config, resolved YAML, plain dict of the resolved config)
Composer = Callable[[str, list[str]], tuple[Any, str, dict]]


def run_digest(run_dir: Path) -> str:
    """The digest of what downstream stages read from a run dir: its artifacts and, for a stage, its unique id."""
    digest = hashlib.sha256()
    for name in ARTIFACTS:
        digest.update(f"{name}:{file_digest(run_dir / name)};".encode())
    record = _read_record(run_dir)
    digest.update(str(record.get("id") if record else None).encode())
    return digest.hexdigest()[:16]


def _dataset_inputs(dataset: dict) -> dict[str, str]:
    files = dataset_files(dataset["name"], dataset.get("data_dir") or ".")
    inputs = {f"data:{path.name}": file_digest(path) for path in files}
    if dataset["name"] == "derived":
        path = Path(dataset["path"])
        inputs["derived"] = _derived_digest(path)
        base = derived_origin(path) or {"name": dataset["base"]}
        inputs.update({f"base_{k}": v for k, v in _dataset_inputs({**base, "data_dir": dataset["data_dir"]}).items()})
    return inputs


def _derived_digest(path: Path) -> str:
    """An `advx construct` dir's digest, or that of the authors' released files in `path`."""
    if (path / "dataset.pt").is_file():
        return run_digest(path)
    return hashlib.sha256("".join(file_digest(path / n) for n in ("CIFAR_ims", "CIFAR_lab")).encode()).hexdigest()[:16]


def key_view(command: str, config: dict) -> tuple[dict, dict[str, str]]:
    """The config with paths and display-only keys removed, and the digests of what those paths point to."""
    view = json.loads(json.dumps(config))
    view.get("runtime", {}).pop("progress", None)  # progress bars do not change results
    inputs: dict[str, str] = {}
    if command == "train":
        inputs.update(_dataset_inputs(view["dataset"]))
        view["dataset"]["data_dir"] = view["dataset"]["path"] = None
        view["resume"] = None
    elif command == "probe":
        run = Path(config["run"])
        inputs["run"] = run_digest(run)
        dataset = config["dataset"] or asdict(trained_dataset(run, config.get("data_dir")))
        inputs.update(_dataset_inputs(dataset))
        view["run"] = view["data_dir"] = None
        if view["dataset"]:
            view["dataset"]["data_dir"] = view["dataset"]["path"] = None
    else:
        upstream = {"attack": ("run", "source"), "construct": ("source",)}[command]
        for key in upstream:
            if view.get(key):
                inputs[key] = run_digest(Path(view[key]))
                view[key] = None
        origin = Path(config["run"] if command == "attack" else config["source"])
        if (origin / "config.yaml").is_file():
            inputs.update(_dataset_inputs(asdict(trained_dataset(origin, config.get("data_dir")))))
        if view.get("derived"):
            inputs["derived"] = _derived_digest(Path(view["derived"]))
            view["derived"] = None
        view["data_dir"] = None
        view.pop("resume", None)
    return view, inputs


def _read_record(run_dir: Path) -> dict | None:
    """A stage's record, or None while it is unfinished: a missing or unreadable record counts as unfinished."""
    try:
        record = json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return record if isinstance(record, dict) and isinstance(record.get("code"), dict) else None


def _damaged(out: Path, command: str) -> str | None:
    """Why a finished stage cannot be reused (one line naming the damaged file), or None when what reproductions
    read from it reads back: its metrics, a train or probe stage's model and config (and a train stage's
    history), or a construct stage's dataset."""
    try:
        metrics = read_json(out / "metrics.json", RERUN)
        if not isinstance(metrics, dict):
            raise DamagedFile(out / "metrics.json", f"{shown(out / 'metrics.json')} is damaged (not a JSON object); "
                                                    f"{RERUN}")
        if command in ("train", "probe"):
            load_model(out, torch.device("cpu"))
            trained_dataset(out, None)
        if command == "train":
            read_history(out)
        elif command == "construct":
            read_derived(out)
    except AdvxError as error:
        return _problem(error)
    return None


def _damaged_progress(out: Path, command: str) -> str | None:
    """Why an unfinished stage cannot be continued, or None: a training state that does not load (the resumed
    training would stop on it), or a construction that wrote its results but cannot read them back."""
    try:
        if command == "train" and (out / STATE_FILE).is_file():
            state = load_tensors(out / STATE_FILE, RERUN)
            if not isinstance(state, dict) or not all(key in state for key in STATE_KEYS):
                raise DamagedFile(out / STATE_FILE, f"{shown(out / STATE_FILE)} is not a training state; {RERUN}")
        elif command == "construct" and (out / "metrics.json").is_file() and (out / DATA_FILE).is_file():
            return _damaged(out, command)  # run_construct would take these results as they are
    except AdvxError as error:
        return _problem(error)
    return None


def _problem(error: AdvxError) -> str:
    """An error line without its advice (the last clause of a DamagedFile line): the store acts on it itself."""
    line = str(error)
    return (line.rpartition("; ")[0] or line) if isinstance(error, DamagedFile) else line


def _code_key(code: dict) -> dict:
    """The part of the code version a stage's key depends on (git sha and dirty flag are for people)."""
    return {k: code.get(k) for k in ("advx", "source")}


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class StageUse:
    """One stage as a reproduction used it."""

    name: str
    command: str
    path: Path
    ran: bool  # False: reused a finished stage
    code: dict  # the code that made it
    same_code: bool  # made by this very code
    seconds: float  # its compute time when it ran

    def to_json(self, store: Path) -> dict:
        return {"name": self.name, "command": self.command, "dir": str(self.path.relative_to(store)),
                "ran": self.ran, "code": describe_code(self.code), "same_code": self.same_code,
                "seconds": round(self.seconds, 1)}


class Stages:
    """Runs train, construct and attack stages in the store `root`, reusing or resuming what is there.

    `common` overrides go to every stage (runtime settings); `compose` builds a stage's config from overrides.
    """

    def __init__(self, root: Path, common: list[str], compose: Composer, reuse: str = "exact"):
        if reuse not in REUSE:
            raise ConfigError(f"reuse={reuse!r} is not valid; choose one of: {', '.join(REUSE)}")
        self.root = root.resolve()
        self.common = common
        self.compose = compose
        self.reuse = reuse
        self.used: list[StageUse] = []

    def train(self, name: str, overrides: list[str]) -> Path:
        """The run dir of a finished training stage."""
        return self._stage("train", name, overrides, run_training, "train_seconds")[0]

    def construct(self, name: str, overrides: list[str]) -> Path:
        """The run dir of a finished `advx construct` stage (a derived dataset)."""
        return self._stage("construct", name, overrides, run_construct, "wall_seconds")[0]

    def probe(self, name: str, overrides: list[str]) -> tuple[Path, dict]:
        """The run dir and metrics of a finished `advx probe` stage (a linear probe on a frozen encoder)."""
        return self._stage("probe", name, overrides, run_probe, "wall_seconds")

    def attack(self, name: str, overrides: list[str]) -> dict:
        """The metrics of a finished attack stage."""
        def run_quietly(typed, out, resolved):
            return run_attack(typed, out, resolved, show=False)

        return self._stage("attack", name, overrides, run_quietly, "wall_seconds")[1]

    @property
    def compute_seconds(self) -> float:
        """The time every stage took when it ran, reused ones included."""
        return sum(use.seconds for use in self.used)

    def _stage(self, command: str, name: str, overrides: list[str], run: Callable, seconds_key: str,
               ) -> tuple[Path, dict]:
        with section("stage store: composing, keys, reading stages back"):
            return self._find_or_run(command, name, overrides, run, seconds_key)

    def _find_or_run(self, command: str, name: str, overrides: list[str], run: Callable, seconds_key: str,
                     ) -> tuple[Path, dict]:
        typed, resolved, config = self.compose(command, [*self.common, *overrides])
        view, inputs = key_view(command, config)
        inputs_key = _digest({"command": command, "config": view, "inputs": inputs})
        code = code_version()
        key = _digest({"inputs": inputs_key, "code": _code_key(code)})[:16]
        out = self._find(key, inputs_key) or self.root / f"{name}-{key}"
        with self._lock(key):
            record = _read_record(out)
            problem = _damaged(out, command) if record else _damaged_progress(out, command)
            if problem:
                log.warning("stage %s: %s; %s", name, problem, "rerunning it" if record else "starting it again")
                shutil.rmtree(out)
                out, record = self.root / f"{name}-{key}", None
            if record is None:
                log.info("stage %s: %s in %s", name, command, out)
                with section(f"{command} stages that ran"):
                    run(typed, out, resolved)
                record = {"name": name, "command": command, "key": key, "inputs_key": inputs_key, "code": code,
                          "inputs": inputs, "config": view, "id": uuid.uuid4().hex,
                          "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                write_json(out / RECORD, record)
                ran = True
            else:
                log.info("stage %s: reused %s", name, out)
                ran = False
        metrics = read_json(out / "metrics.json", f"remove {shown(out)} to rerun the stage")
        same = _code_key(record["code"]) == _code_key(code)
        self.used.append(StageUse(name, command, out, ran, record["code"], same, metrics.get(seconds_key, 0.0)))
        return out, metrics

    def _find(self, key: str, inputs_key: str) -> Path | None:
        """A dir of this exact key (finished or not); with reuse=any, else a finished one with the same inputs."""
        exact = sorted(self.root.glob(f"*-{key}"))
        if exact:
            return exact[0]
        if self.reuse == "any":
            for record_file in sorted(self.root.glob(f"*/{RECORD}")):
                record = _read_record(record_file.parent)
                if record and record.get("inputs_key") == inputs_key:
                    return record_file.parent
        return None

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        """One process at a time per stage (parallel sweep jobs may share stages)."""
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{key}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
