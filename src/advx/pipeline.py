"""Reproduce pipelines: cached stages, claims checked against the paper, and the report.

A stage is a normal `advx train`, `advx attack` or `advx construct` run, composed from the same configs as the
CLI, in its own dir `<reproduce dir>/stages/<name>-<hash of its resolved config>`. A stage whose dir holds
`metrics.json` is reused; one with a saved training state or saved chunks resumes; anything else runs. So a
second invocation, or one after a kill, redoes only what is missing, and changing a knob reruns only the stages
it touches.

Claims live in `experiments/<paper>/paper.yaml`: the paper's value, a criterion fixed before measuring and a
one-line reason. A criterion is one of
    ">= X", "<= X", "> X", "< X"       compare the measurement with a number
    "within D"                          |measured - paper| <= D
    "> claim:ID", "< claim:ID"          compare with another claim's measurement
and yields `reproduced`, `deviates`, or `not_run` (with the reason) when nothing was measured.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from advx.errors import ConfigError, first_line
from advx.hydra_bridge import compose_config, typed_config
from advx.runs import write_json, write_text

log = logging.getLogger("advx")
EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"


class Stages:
    """Runs train, construct and attack stages under `root/stages`, reusing or resuming what is there."""

    def __init__(self, root: Path, common: list[str]):
        self.root = root
        self.common = common  # overrides every stage gets (runtime settings)
        self.reused: list[str] = []
        self.ran: list[str] = []
        self.compute_seconds = 0.0  # the time every stage took when it ran, reused ones included

    def _prepare(self, command: str, name: str, overrides: list[str]) -> tuple[Any, Path, str, bool]:
        cfg = compose_config(command, [*self.common, *overrides])
        resolved = OmegaConf.to_yaml(cfg, resolve=True)
        cache_view = OmegaConf.to_container(cfg, resolve=True)
        cache_view.get("runtime", {}).pop("progress", None)  # progress bars do not change results
        cache_view.get("dataset", {}).pop("data_dir", None)  # nor does where the same files lie
        key = hashlib.sha256(json.dumps(cache_view, sort_keys=True).encode()).hexdigest()[:10]
        out = self.root / "stages" / f"{name}-{key}"
        done = (out / "metrics.json").is_file()
        (self.reused if done else self.ran).append(name)
        return typed_config(cfg), out, resolved, done

    def _stage(self, command: str, name: str, overrides: list[str], run: Callable, seconds_key: str,
               ) -> tuple[Path, dict]:
        """Run (or reuse) one stage of `command`; its dir and final metrics."""
        typed, out, resolved, done = self._prepare(command, name, overrides)
        log.info("stage %s: %s", name, "reused" if done else f"{command} in {out}")
        if not done:
            run(typed, out, resolved)
        metrics = json.loads((out / "metrics.json").read_text())
        self.compute_seconds += metrics.get(seconds_key, 0.0)
        return out, metrics

    def train(self, name: str, overrides: list[str]) -> Path:
        """The run dir of a finished training stage."""
        from advx.tasks import run_training

        return self._stage("train", name, overrides, run_training, "train_seconds")[0]

    def construct(self, name: str, overrides: list[str]) -> Path:
        """The run dir of a finished `advx construct` stage (a derived dataset)."""
        from advx.tasks import run_construct

        return self._stage("construct", name, overrides, run_construct, "wall_seconds")[0]

    def attack(self, name: str, overrides: list[str]) -> dict:
        """The metrics of a finished attack stage."""
        from advx.tasks import run_attack

        def run_quietly(typed, out, resolved):
            run_attack(typed, out, resolved, show=False)

        return self._stage("attack", name, overrides, run_quietly, "wall_seconds")[1]


@dataclass
class Measurement:
    value: float | None
    note: str = ""  # how it was measured, or why it was not


@dataclass
class Outcome:
    """What a paper's pipeline hands to the report: measurements by claim id, figure files, extra tables."""

    measurements: dict[str, Measurement]
    figures: list[str]
    tables: list[tuple[str, str]] = field(default_factory=list)  # (heading, markdown table) sections


@dataclass
class Claim:
    id: str
    description: str
    source: str
    paper: float | None
    criterion: str
    reason: str
    measured: float | None = None
    note: str = ""
    status: str = "not_run"
    std: float | None = None
    runs: list[float] = field(default_factory=list)


def load_claims(paper: str) -> tuple[dict, list[Claim]]:
    """The paper's metadata and claims from experiments/<paper>/paper.yaml."""
    path = EXPERIMENTS_DIR / paper / "paper.yaml"
    if not path.is_file():
        raise ConfigError(f"no claims for paper {paper!r}: {path} not found")
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as error:  # a YAML syntax error in a hand-edited file
        raise ConfigError(f"cannot read {path}: {first_line(error)}") from None
    claims = [Claim(**{k: c.get(k) for k in ("id", "description", "source", "paper", "criterion", "reason")})
              for c in data.pop("claims")]
    return data, claims


def judge(claim: Claim, measured: dict[str, float | None]) -> str:
    """`reproduced` or `deviates` by the claim's criterion; `not_run` when there is no measurement."""
    if claim.measured is None:
        return "not_run"
    op, _, operand = claim.criterion.strip().partition(" ")
    if op == "within":
        if claim.paper is None:
            raise ConfigError(f"claim {claim.id}: 'within' needs a paper value")
        return "reproduced" if abs(claim.measured - claim.paper) <= float(operand) else "deviates"
    if operand.startswith("claim:"):
        other = measured.get(operand.removeprefix("claim:"))
        if other is None:
            return "not_run"
        reference = other
    else:
        reference = float(operand)
    comparisons: dict[str, Callable[[float, float], bool]] = {
        ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
    }
    if op not in comparisons:
        raise ConfigError(f"claim {claim.id}: unknown criterion {claim.criterion!r}")
    return "reproduced" if comparisons[op](claim.measured, reference) else "deviates"


def settle(claims: list[Claim], measurements: dict[str, Measurement]) -> list[Claim]:
    """Attach measurements to claims and judge each one."""
    for claim in claims:
        found = measurements.get(claim.id)
        if found is not None:
            claim.measured, claim.note = found.value, found.note
        else:
            claim.note = "no stage measures this claim"
    values = {c.id: c.measured for c in claims}
    for claim in claims:
        claim.status = judge(claim, values)
    return claims


def _fmt(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "–"
    text = f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return f"{text} ± {std:.2g}" if std is not None else text


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def write_report(out: Path, meta: dict, claims: list[Claim], *, scale: str, seeds: list[int], device: str,
                 wall_seconds: float, deviations: list[tuple[str, str, str]], figures: list[str],
                 environment: dict | None = None, stages: Stages | None = None,
                 tables: list[tuple[str, str]] | None = None) -> dict:
    """Write report.json (DESIGN.md format) and report.md into `out`; returns the JSON document."""
    document = {
        "paper": meta["paper"], "title": meta.get("title", ""), "scale": scale, "seeds": seeds, "device": device,
        "wall_seconds": round(wall_seconds, 1),
        **({"stage_compute_seconds": round(stages.compute_seconds, 1)} if stages is not None else {}),
        "claims": [{"id": c.id, "description": c.description, "source": c.source, "paper": c.paper,
                    "measured": c.measured, **({"std": c.std, "runs": c.runs} if c.runs else {}),
                    "criterion": c.criterion, "reason": c.reason, "status": c.status, "note": c.note}
                   for c in claims],
        "deviations": [{"choice": a, "ours": b, "why": c} for a, b, c in deviations],
        "figures": figures,
    }
    write_json(out / "report.json", document)
    counts = {s: sum(c.status == s for c in claims) for s in ("reproduced", "deviates", "not_run")}
    lines = [
        f"# {meta['paper']}: {meta.get('title', '')}", "",
        f"Scale `{scale}`, seed(s) {', '.join(map(str, seeds))}, device `{device}`, {wall_seconds / 60:.1f} min. "
        f"{counts['reproduced']} reproduced, {counts['deviates']} deviate, {counts['not_run']} not run.", "",
        "| claim | source | paper | ours | criterion | status | note |", "|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        ours = _fmt(c.measured, c.std)
        lines.append(f"| {_cell(c.description)} (`{c.id}`) | {c.source} | {_fmt(c.paper)} | {ours} | {c.criterion} | "
                     f"**{c.status}** | {_cell(c.note)} |")
    lines += ["", "Criteria were fixed before measuring; each one's reason is in "
              f"`experiments/{meta['paper']}/paper.yaml` and in report.json.", ""]
    for heading, table in tables or []:
        lines += [f"## {heading}", "", table, ""]
    if deviations:
        lines += ["## Deviations from the paper", "", "| choice | ours | why |", "|---|---|---|"]
        lines += [f"| {_cell(a)} | {_cell(b)} | {_cell(c)} |" for a, b, c in deviations]
        lines.append("")
    if figures:
        lines += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    if stages is not None:
        lines += ["## Stages", "", f"Ran: {', '.join(stages.ran) or 'none'}. "
                  f"Reused from earlier runs: {', '.join(stages.reused) or 'none'}. The stages hold "
                  f"{stages.compute_seconds / 60:.1f} min of training and attacks (when they ran); this invocation "
                  f"took {wall_seconds / 60:.1f} min.", ""]
    if environment:
        lines += ["## Environment", "", "```", json.dumps(environment, indent=1, default=str), "```", ""]
    write_text(out / "report.md", "\n".join(lines))
    return document


def aggregate_reports(sweep_dir: Path) -> dict | None:
    """Mean ± std per claim over the job reports of a sweep (e.g. `-m seed=0,1,2,3,4`), judged on the mean."""
    reports = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/report.json"))]
    if not reports:
        return None
    meta, claims = load_claims(reports[0]["paper"])
    measurements = {}
    for claim in claims:
        runs = [c["measured"] for r in reports for c in r["claims"]
                if c["id"] == claim.id and c["measured"] is not None]
        claim.runs = runs
        if runs:
            claim.std = statistics.stdev(runs) if len(runs) > 1 else 0.0
            measurements[claim.id] = Measurement(statistics.fmean(runs), f"mean of {len(runs)} runs")
    settle(claims, measurements)
    for claim in claims:  # settle() resets notes of claims without runs; keep the per-run spread
        if not claim.runs:
            claim.note = "not measured in any run"
    seeds = sorted({s for r in reports for s in r.get("seeds", [])})
    wall = sum(r.get("wall_seconds", 0.0) for r in reports)
    return write_report(sweep_dir, meta, claims, scale=reports[0]["scale"], seeds=seeds, device=reports[0]["device"],
                        wall_seconds=wall, deviations=[(d["choice"], d["ours"], d["why"])
                                                       for d in reports[0].get("deviations", [])], figures=[])


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
