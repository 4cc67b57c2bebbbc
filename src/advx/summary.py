"""Summaries of finished runs: a rich table on the terminal and `summary.csv` in a sweep dir.

Used at the end of every `-m` sweep (through `callbacks.SweepSummaryCallback`) and by `advx report <dir>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from advx.errors import AdvxError, DamagedFile, shown
from advx.runs import read_json, saved_overrides, write_csv

# Results go to stdout (logs and progress to stderr); wide when piped, so tables are not truncated.
results_console = Console() if Console().is_terminal else Console(width=200)


def _scalars(metrics: dict) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str) and k not in ("run", "source")}


def run_rows(directory: Path) -> list[dict[str, Any]]:
    """One row per finished run under `directory` (itself, or its job subdirs): the overrides that differ
    between runs, then the final scalar metrics."""
    metric_files = sorted(directory.glob("metrics.json")) or sorted(directory.glob("*/metrics.json"),
                                                                   key=lambda p: _job_order(p.parent.name))
    rows, settings = [], []
    for path in metric_files:
        overrides = saved_overrides(path.parent, _remedy(path.parent))
        settings.append(dict(o.split("=", 1) for o in overrides if "=" in o and not o.startswith("hydra")))
        rows.append(_scalars(_metrics(path)))
    keys = list(dict.fromkeys(k for s in settings for k in s))
    varying = [k for k in keys if len({s.get(k) for s in settings}) > 1] if len(rows) > 1 else keys
    return [{"run": path.parent.name, **{k: s.get(k, "") for k in varying}, **row}
            for path, s, row in zip(metric_files, settings, rows, strict=True)]


def _remedy(run_dir: Path) -> str:
    return f"rerun the command that made {shown(run_dir)}"


def _metrics(path: Path) -> dict:
    metrics = read_json(path, _remedy(path.parent))
    if not isinstance(metrics, dict):
        raise DamagedFile(path, f"{shown(path)} is damaged (not a JSON object); {_remedy(path.parent)}")
    return metrics


def _job_order(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (1 << 30, name)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, justify="left" if column in ("run", "overrides") else "right")
    for row in rows:
        table.add_row(*(_format(row.get(column, "")) for column in columns))
    results_console.print(table)


def summarize(directory: str | Path) -> list[dict[str, Any]]:
    """Print the table of every finished run under `directory`; for a sweep dir, also write summary.csv."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AdvxError(f"{directory} is not a directory")
    rows = run_rows(directory)
    if not rows:
        raise AdvxError(f"no finished runs in {directory} (no metrics.json in it or its subdirs)")
    print_table(rows, title=str(directory))
    if not (directory / "metrics.json").is_file():
        write_csv(directory / "summary.csv", rows)
        results_console.print(f"wrote {directory / 'summary.csv'}")
    return rows
