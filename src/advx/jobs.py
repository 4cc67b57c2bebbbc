"""Job runners: turn a typed config into a finished run dir. Plain Python, no Hydra: the Hydra tasks
(`tasks.py`) and the stage store (`stages.py`) both call these.

Each runner records the resolved config and the environment in the run dir, calls the library code, and writes
its metrics last (`metrics.json`), so a dir without it is unfinished.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from advx.attacks import Attack
from advx.construct import construct, make_plan, summarize_chunks
from advx.data import load_dataset
from advx.derived import DATA_FILE, assemble
from advx.errors import ConfigError
from advx.evaluate import attack_metrics, error_rate
from advx.models import build_model
from advx.pretext import is_self_supervised
from advx.progress import Bars
from advx.runs import (
    STATE_FILE,
    environment,
    load_model,
    save_model,
    trained_config,
    trained_dataset,
    write_csv,
    write_json,
    write_text,
)
from advx.runtime import Runtime, seed_everything
from advx.schema import AttackConfig, AttackTaskConfig, ConstructTaskConfig, DatasetConfig, TrainTaskConfig
from advx.summary import print_table
from advx.train import fit

log = logging.getLogger("advx")


def start_run(typed: Any, out: Path, resolved_yaml: str) -> Runtime:
    """Record config.yaml and env.json in the run dir; returns the runtime chosen from the config."""
    write_text(out / "config.yaml", resolved_yaml)
    runtime = Runtime.from_config(**asdict(typed.runtime))
    write_json(out / "env.json", environment(runtime.describe()))
    return runtime


def attacks_for(cfg: AttackConfig) -> list[Attack]:
    """One Attack per eps value of the config."""
    fields = {k: v for k, v in asdict(cfg).items() if k not in ("eps", "batch_size")}
    return [Attack(eps=eps, **fields) for eps in cfg.eps]


def evaluate_attacks(model, split, attack_cfg: AttackConfig, runtime: Runtime, bars: Bars, source=None,
                     ) -> list[dict]:
    rows = []
    task = bars.outer("attack", total=len(attack_cfg.eps))
    for attack in attacks_for(attack_cfg):
        rows.append(attack_metrics(model, split, attack, runtime, source=source,
                                   batch_size=attack_cfg.batch_size, bars=bars))
        log.info("%s eps=%g: adv_error=%.4f adv_confidence=%.4f (on mistakes %.4f)", attack.name, attack.eps,
                 rows[-1]["adv_error"], rows[-1]["adv_confidence"], rows[-1]["adv_confidence_wrong"])
        bars.advance(task)
    return rows


def flat_attack_metrics(rows: list[dict], name: str) -> dict[str, float]:
    """`adv_error@0.25`-style keys for the summary table, one set per eps."""
    flat = {}
    for row in rows:
        for key in ("adv_error", "adv_confidence", "adv_confidence_wrong"):
            flat[f"{name}_{key}@{row['eps']:g}"] = row[key]
    return flat


def run_training(typed: TrainTaskConfig, out: Path, resolved_yaml: str) -> dict:
    """Fit the model into run dir `out` (continuing a saved state there), save it, evaluate `attack` on the
    test set; returns and writes the final metrics.

    A self-supervised regime (simclr | mae | ddpm) trains the encoder and its pretext parts (recorded in the
    sidecar as hparams `pretext`, and simclr's `projection`), leaves the head untrained and reports only
    `pretext_loss` (the last epoch's train loss), `epochs` and `train_seconds`; it cannot be attacked before a
    linear probe gives it a head."""
    regime = typed.regime
    hparams = {k: v for k, v in asdict(typed.model).items() if k != "name"}
    self_supervised = is_self_supervised(regime)
    if self_supervised:
        if typed.attack.name != "none":
            raise ConfigError(f"regime={regime.name} leaves the classifier head untrained, so attack="
                              f"{typed.attack.name} has nothing to attack; train with attack=none and attack a "
                              f"linear probe of it (advx probe run=<this run>)")
        if typed.train.patience:
            raise ConfigError(f"train.patience watches a validation error, which regime={regime.name} does not "
                              f"measure; set train.patience=0")
        hparams["pretext"] = regime.name
        if regime.name == "simclr":
            hparams["projection"] = [regime.projection_hidden, regime.projection_dim]
    runtime = start_run(typed, out, resolved_yaml)
    generator = seed_everything(typed.seed)
    data = load_dataset(typed.dataset, runtime.device)
    spec = {"model": typed.model.name, "input_shape": list(data.input_shape), "num_classes": data.num_classes,
            "mean": data.mean, "std": data.std, "hparams": hparams, "dataset": typed.dataset.name}
    model = build_model(spec["model"], data.input_shape, data.num_classes, data.mean, data.std, **hparams)
    model = model.to(runtime.device)
    log.info("training %s on %s (%d train / %d test) on %s, run dir %s", typed.model.name, typed.dataset.name,
             len(data.train), len(data.test), runtime.device, out)
    with Bars(typed.runtime.progress) as bars:
        state = fit(model, data, optim=typed.optim, regime=typed.regime, loop=typed.train, runtime=runtime,
                    generator=generator, state_path=out / STATE_FILE,
                    on_epoch=lambda history: write_csv(out / "metrics.csv", history), bars=bars)
        save_model(out, model, spec)
        if self_supervised:
            metrics = {"pretext_loss": state.history[-1]["train_loss"], "epochs": state.epoch + 1,
                       "train_seconds": sum(r["seconds"] for r in state.history)}
            write_json(out / "metrics.json", metrics)
            log.info("%s loss=%.4f after %d epochs (head untrained: probe it with advx probe); wrote %s",
                     regime.name, metrics["pretext_loss"], metrics["epochs"], out)
            return metrics
        metrics = {"test_error": error_rate(model, data.test, runtime, typed.train.eval_batch_size),
                   "epochs": state.epoch + 1, "train_seconds": sum(r["seconds"] for r in state.history)}
        if data.val is not None:
            metrics["val_error"] = error_rate(model, data.val, runtime, typed.train.eval_batch_size)
        if state.best_epoch >= 0:
            metrics["best_epoch"] = state.best_epoch + 1
        if typed.attack.name != "none":
            rows = evaluate_attacks(model, data.test, typed.attack, runtime, bars)
            metrics.update(flat_attack_metrics(rows, typed.attack.name))
            metrics["attacks"] = rows
    write_json(out / "metrics.json", metrics)
    log.info("test_error=%.4f after %d epochs; wrote %s", metrics["test_error"], metrics["epochs"], out)
    return metrics


def run_attack(typed: AttackTaskConfig, out: Path, resolved_yaml: str, show: bool = True) -> dict:
    """Clean and adversarial metrics of a trained model for every eps (crafted on `source` for transfer);
    `show` prints the table of results."""
    started = time.perf_counter()
    runtime = start_run(typed, out, resolved_yaml)
    seed_everything(typed.seed)
    run = Path(typed.run)
    model, spec = load_model(run, runtime.device)
    source = None
    if typed.source:
        source, source_spec = load_model(Path(typed.source), runtime.device)
        if source_spec["input_shape"] != spec["input_shape"] or source_spec["num_classes"] != spec["num_classes"]:
            raise ConfigError(f"source {typed.source} and run {typed.run} have different inputs or classes")
        source = runtime.prepare(source)
    model = runtime.prepare(model)  # the device layout, and torch.compile when runtime.compile=true
    dataset_cfg = trained_dataset(run, typed.data_dir)
    if typed.derived:
        dataset_cfg = DatasetConfig(name="derived", path=typed.derived, data_dir=dataset_cfg.data_dir)
    if typed.split != "val":
        dataset_cfg.val_size = 0  # evaluate on the whole split
    data = load_dataset(dataset_cfg, runtime.device)
    if typed.split == "val" and data.val is None:
        raise ConfigError(f"split=val needs a run trained with dataset.val_size > 0, or on a dataset derived from "
                          f"such a run's model: {typed.derived or run} has no validation split")
    split = {"test": data.test, "train": data.train, "val": data.val}[typed.split]
    if typed.num_examples is not None and typed.num_examples > len(split):
        raise ConfigError(f"num_examples={typed.num_examples} exceeds the {len(split)} {typed.split} examples; use "
                          f"null for all")
    split = split.head(typed.num_examples)
    log.info("attacking %s (%s) on %d %s examples%s%s", run, spec["model"], len(split), typed.split,
             f" of {typed.derived}" if typed.derived else "",
             f", examples crafted on {typed.source}" if source is not None else "")
    with Bars(typed.runtime.progress) as bars:
        rows = evaluate_attacks(model, split, typed.attack, runtime, bars, source=source)
    metrics = {"clean_error": rows[0]["clean_error"], **flat_attack_metrics(rows, typed.attack.name),
               "attacks": rows, "run": str(run), "source": typed.source,
               "wall_seconds": round(time.perf_counter() - started, 2)}
    write_json(out / "metrics.json", metrics)
    write_csv(out / "attack.csv", rows)
    if show:
        print_table(rows, title=f"{typed.attack.name} on {run}" + (f" (crafted on {typed.source})" if source else ""))
    return metrics


def run_construct(typed: ConstructTaskConfig, out: Path, resolved_yaml: str) -> dict:
    """Derive a dataset from the source model into run dir `out`, continuing the chunks saved there; writes
    dataset.pt, derived.json and metrics.json (see derived.py)."""
    if (out / "metrics.json").is_file() and (out / DATA_FILE).is_file():
        log.info("%s already holds a finished construction; nothing to do", out)
        return json.loads((out / "metrics.json").read_text())
    started = time.perf_counter()
    runtime = start_run(typed, out, resolved_yaml)
    cfg, source = typed.construct, Path(typed.source)
    model, spec = load_model(source, runtime.device)
    model = runtime.prepare(model)  # the device layout, and torch.compile when runtime.compile=true
    source_config = trained_config(source)
    dataset_cfg = trained_dataset(source, typed.data_dir)
    # every example the source trained on, as the paper; a source's validation split stays held out (neither target
    # nor start image), so a model trained on the derived data can be scored on it (advx attack split=val)
    if dataset_cfg.preprocess != "none" or dataset_cfg.name == "spheres":
        raise ConfigError(f"advx construct needs images in [0, 1]; {source} was trained on "
                          f"{dataset_cfg.name} with preprocess={dataset_cfg.preprocess}")
    regime = source_config.get("regime", {}).get("name", "standard")
    if cfg.inverts and (cfg.kind == "robust") == (regime == "standard"):
        log.warning("construct %s from a source trained with regime=%s: the paper builds D_R from an adversarially "
                    "trained model and D_NR from a standard one", cfg.kind, regime)
    data = load_dataset(dataset_cfg, runtime.device)
    plan = make_plan(cfg, data.train.labels, data.num_classes, typed.seed, data.input_shape)
    log.info("constructing %s from %s (%s, regime=%s): %d examples of %s in chunks of %d, run dir %s", cfg.kind,
             source, spec["model"], regime, len(plan), dataset_cfg.name, cfg.chunk_size, out)
    with Bars(typed.runtime.progress) as bars:
        chunks = construct(model, data.train, plan, cfg, runtime, out, bars)
    stats = summarize_chunks(chunks, cfg)
    meta = {"kind": cfg.kind, "source": str(source.resolve()), "source_model": spec["model"],
            "source_regime": regime, "source_dataset": asdict(dataset_cfg), "seed": typed.seed,
            "parameters": asdict(cfg), **stats}
    assemble(out, chunks, meta)
    metrics = {**stats, "wall_seconds": round(time.perf_counter() - started, 2)}
    write_json(out / "metrics.json", metrics)
    log.info("constructed %s: %s; wrote %s", cfg.kind, ", ".join(f"{k}={v:.4g}" for k, v in stats.items()), out)
    return metrics
