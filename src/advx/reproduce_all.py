"""`advx reproduce all [scale=...]`: every paper one after another, and one index of their reports.

Each paper runs as its own `advx reproduce PAPER` process (its own Hydra run, log and report) into
outputs/reproduce/all-<scale>/<paper>-seed<seed>/, sharing the stage store as always; then
outputs/reproduce/all-<scale>/index.md lists one line per paper (claims and checks by status, minutes, a link
to its report) and the total time. Every paper's job is composed and checked before the first one starts, so a
bad override fails at once; a paper that fails is listed as failed and the others still run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from advx.errors import ConfigError
from advx.hydra_bridge import compose_job, split_hydra_flags
from advx.papers import PAPERS
from advx.preflight import check_job
from advx.progress import console
from advx.runs import read_json, write_text
from advx.summary import results_console

OUTPUTS = Path("outputs/reproduce")  # where `advx reproduce` writes, relative to the working dir


def reproduce_all(args: list[str]) -> bool:
    """Run every paper with the common overrides `args` and write the index; True when every paper finished."""
    flags, overrides = split_hydra_flags(args)
    if flags:
        raise ConfigError(f"advx reproduce all runs each paper once and takes no {' '.join(flags)}: sweep one paper "
                          "with `advx reproduce PAPER -m seed=0,1,2`")
    if any(o.startswith(("paper=", "paper.", "hydra.")) for o in overrides):
        raise ConfigError("advx reproduce all takes overrides every paper shares (scale, seed, store, reuse, "
                          "runtime.*, data_dir); set a paper's own knobs with `advx reproduce PAPER ...`")
    jobs = {name: compose_job("reproduce", [f"paper={name}", *overrides]) for name in PAPERS}
    for typed in jobs.values():
        check_job("reproduce", typed)
    first = next(iter(jobs.values()))
    index_dir = OUTPUTS / f"all-{first.scale}"
    started = time.perf_counter()
    rows = [_run_one(name, index_dir / f"{name}-seed{first.seed}", overrides) for name in PAPERS]
    total = time.perf_counter() - started
    index = _index(rows, first.scale, first.seed, total)
    write_text(index_dir / "index.md", index)
    results_console.print(index, highlight=False, soft_wrap=True, markup=False)
    return all(row["ok"] for row in rows)


def _run_one(name: str, run_dir: Path, overrides: list[str]) -> dict:
    """Run one paper in its own process; its counts and minutes from the metrics.json it wrote."""
    console.print(f"[bold]advx reproduce all: {name}[/bold] -> {run_dir}")
    started = time.perf_counter()
    code = subprocess.call([sys.executable, "-m", "advx", "reproduce", name, *overrides, f"hydra.run.dir={run_dir}"])
    row = {"paper": name, "dir": run_dir, "ok": code == 0, "code": code, "seconds": time.perf_counter() - started}
    if code == 0:
        metrics = read_json(run_dir / "metrics.json", f"run `advx reproduce {name}` again")
        row.update(claims=metrics["claims"], checks=metrics["checks"])
    return row


def _counts(found: dict[str, int], passed: str) -> str:
    names = {"reproduced": passed, "deviates": "deviate" if passed == "reproduced" else "fail",
             "inconclusive": "inconclusive", "not_run": "not run"}
    return ", ".join(f"{n} {names[s]}" for s, n in found.items() if n) or "none"


def _index(rows: list[dict], scale: str, seed: int, total: float) -> str:
    lines = [f"# advx reproduce all: scale={scale}, seed {seed}", "",
             f"Total {total / 60:.1f} min, {sum(r['ok'] for r in rows)} of {len(rows)} papers finished.", "",
             "| paper | claims | self-checks | minutes | report |", "|---|---|---|---|---|"]
    for row in rows:
        link = f"[{row['dir'].name}/report.md]({row['dir'].name}/report.md)"
        if row["ok"]:
            lines.append(f"| {row['paper']} | {_counts(row['claims'], 'reproduced')} | "
                         f"{_counts(row['checks'], 'pass')} | {row['seconds'] / 60:.1f} | {link} |")
        else:
            lines.append(f"| {row['paper']} | failed (exit code {row['code']}) | – | {row['seconds'] / 60:.1f} | "
                         f"see {row['dir'].name}/ and the output above |")
    return "\n".join(lines) + "\n"
