"""`advx reproduce <paper>`: run a paper's pipeline over the shared stage store and write its report.

The paper's module (`advx.papers`) asks the stage store for the runs it needs and measures its claims; this
module settles them against `experiments/<paper>/paper.yaml` and writes report.md / report.json, listing every
stage used with the code version that made it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from advx import timing
from advx.claims import counts, load_claims, settle
from advx.hydra_bridge import compose_config, typed_config
from advx.jobs import start_run
from advx.papers import PAPERS
from advx.provenance import code_version
from advx.report import SMOKE_NOTE, ReportInput, write_report
from advx.runs import write_json
from advx.schema import ReproduceTaskConfig
from advx.stages import Stages
from advx.summary import print_table

log = logging.getLogger("advx")


def compose_stage(command: str, overrides: list[str]) -> tuple[Any, str, dict]:
    """A stage's typed config, resolved YAML and plain resolved dict, composed like the CLI's."""
    cfg = compose_config(command, overrides)
    return typed_config(cfg), OmegaConf.to_yaml(cfg, resolve=True), OmegaConf.to_container(cfg, resolve=True)


def _run_paper(typed: ReproduceTaskConfig, out: Path, resolved_yaml: str):
    """The paper's stages and analyses: (outcome, claims, paper.yaml meta, stages, runtime, paper module)."""
    runtime = start_run(typed, out, resolved_yaml)
    paper = typed.paper
    scale = paper.scales[typed.scale]
    meta, claims = load_claims(paper.name)
    rt = typed.runtime
    common = [f"runtime.device={runtime.device.type}", f"runtime.precision={runtime.precision}",
              f"runtime.compile={rt.compile}", f"runtime.deterministic={rt.deterministic}",
              f"runtime.progress={rt.progress}"]
    stages = Stages(Path(typed.store), common, compose_stage, reuse=typed.reuse)
    data_dir = str(Path(typed.data_dir).resolve())
    log.info("reproducing %s at scale=%s (seed %d) in %s, stages in %s", paper.name, typed.scale, typed.seed, out,
             stages.root)
    module = PAPERS[paper.name]
    outcome = module.run(paper, scale, stages, data_dir, typed.seed, out, runtime.device)
    return outcome, claims, meta, stages, runtime, module


def run_reproduce(typed: ReproduceTaskConfig, out: Path, resolved_yaml: str) -> dict:
    """Run a paper's pipeline with its stages in the store and write report.md / report.json into `out`."""
    started = time.perf_counter()
    with timing.record() as tally:
        outcome, claims, meta, stages, runtime, module = _run_paper(typed, out, resolved_yaml)
    sections = {**tally.seconds, "other (set-up, loading models for analyses, bookkeeping)": tally.rest()}
    paper, scale = typed.paper, typed.paper.scales[typed.scale]
    settle(claims, outcome.measurements, verdicts=typed.scale != "smoke", unjudged_note=SMOKE_NOTE)
    info = ReportInput(
        meta, scale=typed.scale, seeds=[typed.seed], device=str(runtime.device),
        wall_seconds=time.perf_counter() - started, deviations=module.deviations(typed.scale, scale),
        figures=outcome.figures, tables=outcome.tables, stages=[use.to_json(stages.root) for use in stages.used],
        stage_seconds=stages.compute_seconds, time_sections=sections, code=code_version(),
        environment=json.loads((out / "env.json").read_text()))
    write_report(out, claims, info)
    found, checked = counts(claims, "claim"), counts(claims, "check")
    metrics = {"claims": found, "checks": checked, "wall_seconds": round(info.wall_seconds, 1),
               **{c.id: c.measured for c in claims}}
    write_json(out / "metrics.json", metrics)
    title = (f"{paper.name} at scale={typed.scale}: claims {found['reproduced']} reproduced, {found['deviates']} "
             f"deviate, {found['inconclusive']} inconclusive, {found['not_run']} not run; checks "
             f"{checked['reproduced']} pass of {sum(checked.values())} ({out / 'report.md'})")
    print_table([{"kind": c.kind, "id": c.id, "paper": c.paper, "ours": "–" if c.measured is None else c.measured,
                  "criterion": c.criterion, "status": c.status} for c in claims], title=title)
    return metrics
