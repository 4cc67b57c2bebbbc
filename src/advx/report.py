"""A reproduction's report: report.json (DESIGN.md's format) and report.md, for one run or a seed sweep.

The claims table and the checks table are apart and counted apart. Each row shows the value the verdict was
judged on with its 95% interval when it has one (a Monte Carlo rate's, or a sweep's t-interval of the mean,
with how many seeds pass on their own). The stages section lists every stage used: whether it ran or was
reused, and the code version that made it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from advx.claims import STATUSES, Claim, Measurement, counts, load_claims, settle, t_interval
from advx.runs import write_json, write_text

SMOKE_NOTE = "scale=smoke runs on synthetic data: a pipeline check, the paper's claims are not judged"


@dataclass
class ReportInput:
    """Everything a report shows besides the settled claims."""

    meta: dict  # paper.yaml's paper and title
    scale: str
    seeds: list[int]
    device: str
    wall_seconds: float
    deviations: list[tuple[str, str, str]] = field(default_factory=list)  # (choice, ours, why)
    figures: list[str] = field(default_factory=list)
    tables: list[tuple[str, str]] = field(default_factory=list)  # (heading, markdown table)
    stages: list[dict] = field(default_factory=list)  # StageUse.to_json rows
    stage_seconds: float | None = None
    time_sections: dict[str, float] = field(default_factory=dict)  # this invocation's wall time by section
    code: dict | None = None
    environment: dict | None = None

    @property
    def verdicts(self) -> bool:
        return self.scale != "smoke"


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"


def _ours(c: Claim) -> str:
    text = _fmt(c.measured)
    if c.measured is not None and c.low is not None and (c.low, c.high) != (c.measured, c.measured):
        text += f" [{_fmt(c.low)}, {_fmt(c.high)}]"
    if c.runs:
        text += f" ({c.passes}/{len(c.runs)} seeds pass)" if c.passes is not None else f" ({len(c.runs)} seeds)"
    return text


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _claim_json(c: Claim) -> dict:
    row = {"id": c.id, "description": c.description, "source": c.source, "paper": c.paper, "measured": c.measured,
           "low": c.low, "high": c.high, "criterion": c.criterion, "reason": c.reason, "status": c.status,
           "note": c.note}
    if c.runs:
        row.update(runs=c.runs, passes=c.passes)
    if c.revisions:
        row["revisions"] = c.revisions
    return row


def _counts_text(claims: list[Claim], kind: str) -> str:
    found = counts(claims, kind)
    names = {"reproduced": "reproduced" if kind == "claim" else "pass", "deviates": "deviate" if kind == "claim"
             else "fail", "inconclusive": "inconclusive", "not_run": "not run"}
    return ", ".join(f"{found[s]} {names[s]}" for s in STATUSES if found[s]) or "none"


def _table(claims: list[Claim]) -> list[str]:
    lines = ["| id | what | source | paper | ours [95% interval] | criterion | status | note |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| `{c.id}` | {_cell(c.description)} | {_cell(c.source)} | {_fmt(c.paper)} | {_ours(c)} | "
              f"{_cell(c.criterion)} | **{c.status}** | {_cell(c.note)} |" for c in claims]
    return lines


def write_report(out: Path, claims: list[Claim], info: ReportInput) -> dict:
    """Write report.json and report.md into `out`; returns the JSON document."""
    paper_claims = [c for c in claims if c.kind == "claim"]
    checks = [c for c in claims if c.kind == "check"]
    document = {
        "paper": info.meta["paper"], "title": info.meta.get("title", ""), "scale": info.scale, "seeds": info.seeds,
        "device": info.device, "wall_seconds": round(info.wall_seconds, 1), "verdicts": info.verdicts,
        **({"stage_compute_seconds": round(info.stage_seconds, 1)} if info.stage_seconds is not None else {}),
        "counts": {"claims": counts(claims, "claim"), "checks": counts(claims, "check")},
        "claims": [_claim_json(c) for c in paper_claims], "checks": [_claim_json(c) for c in checks],
        "deviations": [{"choice": a, "ours": b, "why": c} for a, b, c in info.deviations],
        "figures": info.figures, "stages": info.stages, **({"code": info.code} if info.code else {}),
        **({"time_seconds": {k: round(v, 1) for k, v in info.time_sections.items()}} if info.time_sections else {}),
    }
    write_json(out / "report.json", document)
    paper = info.meta["paper"]
    lines = [
        f"# {paper}: {info.meta.get('title', '')}", "",
        f"Scale `{info.scale}`, seed(s) {', '.join(map(str, info.seeds))}, device `{info.device}`, "
        f"{info.wall_seconds / 60:.1f} min. Claims of the paper: {_counts_text(claims, 'claim')}. "
        f"Self-checks: {_counts_text(claims, 'check')}.", "",
    ]
    if not info.verdicts:
        lines += [f"**{SMOKE_NOTE}.**", ""]
    if len(info.seeds) > 1:
        lines += ["A claim is reproduced only when its criterion holds on the whole 95% t-interval of the mean over "
                  "the seeds; `k/n seeds pass` counts the seeds whose own run met it.", ""]
    lines += ["## Claims of the paper", "", *_table(paper_claims), "",
              f"Each criterion's reason is in `experiments/{paper}/paper.yaml` and report.json; "
              f"`git log -p experiments/{paper}/paper.yaml` shows when each was written. An interval in brackets is "
              "the one the verdict was judged on: the criterion must hold on all of it.", ""]
    revised = [c for c in claims if c.revisions]
    if revised:
        lines += ["### Revised criteria", ""]
        for c in revised:
            for old in c.revisions:
                lines.append(f"- `{c.id}`: was `{_cell(old.get('criterion', ''))}` ({_cell(old.get('reason', ''))}); "
                             f"changed because {_cell(old.get('why_changed', ''))}")
        lines.append("")
    if checks:
        lines += ["## Self-checks", "", "Checks of the tool itself (closed forms, calibration, reload gaps, attack "
                  "success rates), judged at every scale and counted apart from the paper's claims.", "",
                  *_table(checks), ""]
    for heading, table in info.tables:
        lines += [f"## {heading}", "", table, ""]
    if info.deviations:
        lines += ["## Deviations from the paper", "", "| choice | ours | why |", "|---|---|---|"]
        lines += [f"| {_cell(a)} | {_cell(b)} | {_cell(c)} |" for a, b, c in info.deviations]
        lines.append("")
    if info.figures:
        lines += ["## Figures", ""] + [f"![{name}]({name})" for name in info.figures] + [""]
    if info.time_sections:
        lines += _time_section(info)
    if info.stages:
        lines += _stages_section(info)
    if info.environment:
        lines += ["## Environment", "", "```", json.dumps(info.environment, indent=1, default=str), "```", ""]
    write_text(out / "report.md", "\n".join(lines))
    return document


def _time_section(info: ReportInput) -> list[str]:
    total = max(info.wall_seconds, 1e-9)
    lines = ["## Where the time went", "", f"This invocation's {info.wall_seconds / 60:.1f} min, each second charged "
             "to one section (a stage's own minutes are in the stages table below).", "",
             "| section | minutes | share |", "|---|---|---|"]
    rows = sorted(info.time_sections.items(), key=lambda item: -item[1])
    lines += [f"| {_cell(name)} | {seconds / 60:.2f} | {seconds / total:.0%} |" for name, seconds in rows]
    return [*lines, ""]


def _stages_section(info: ReportInput) -> list[str]:
    ran = [s for s in info.stages if s["ran"]]
    reused = [s for s in info.stages if not s["ran"]]
    other = [s for s in reused if not s["same_code"]]
    lines = ["## Stages", "",
             f"{len(ran)} ran, {len(reused)} reused"
             + (f" ({len(other)} made by other code, reused because reuse=any)" if other else "")
             + f". The stages hold {(info.stage_seconds or 0) / 60:.1f} min of training and attacks (when they ran); "
             f"this invocation took {info.wall_seconds / 60:.1f} min. Stage dirs are relative to the stage store.", "",
             "| stage | dir | ran or reused | made by | minutes |", "|---|---|---|---|---|"]
    lines += [f"| {s['name']} | `{s['dir']}` | {'ran' if s['ran'] else 'reused'} | {s['code']}"
              f"{'' if s['same_code'] else ' (other code)'} | {s['seconds'] / 60:.1f} |" for s in info.stages]
    return [*lines, ""]


def aggregate_reports(sweep_dir: Path) -> dict | None:
    """The report of a seed sweep (`-m seed=0,1,2`): per claim the mean of the seeds' values, judged on its 95%
    t-interval, with how many seeds pass on their own."""
    reports = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/report.json"))]
    if not reports:
        return None
    meta, claims = load_claims(reports[0]["paper"])
    rows: dict[str, list[dict]] = {c.id: [] for c in claims}
    for report in reports:
        for row in report["claims"] + report["checks"]:
            rows.setdefault(row["id"], []).append(row)
    measurements = {}
    for claim in claims:
        seen = rows[claim.id]
        values = [r["measured"] for r in seen if r["measured"] is not None]
        claim.runs = values
        judged = reports[0]["verdicts"] or claim.kind == "check"
        claim.passes = sum(r["status"] == "reproduced" for r in seen) if judged else None
        if not values:
            first = seen[0] if seen else {"status": "not_run", "note": "not in the runs' reports"}
            measurements[claim.id] = Measurement(None, first["note"] or "not measured in any run",
                                                 status=first["status"] if first["status"] != "reproduced" else None)
            continue
        mean, low, high = t_interval(values)
        measurements[claim.id] = Measurement(mean, f"mean of {len(values)} seeds", low=low, high=high)
    settle(claims, measurements, verdicts=reports[0]["verdicts"], unjudged_note=SMOKE_NOTE)
    info = ReportInput(meta, scale=reports[0]["scale"], seeds=sorted({s for r in reports for s in r["seeds"]}),
                       device=reports[0]["device"], wall_seconds=sum(r["wall_seconds"] for r in reports),
                       deviations=[(d["choice"], d["ours"], d["why"]) for d in reports[0]["deviations"]])
    return write_report(sweep_dir, claims, info)
