"""Hydra callbacks: at the end of a `-m` sweep, the sweep's summary table, or its seed-sweep report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from advx.report import aggregate_reports
from advx.summary import results_console, summarize


class SweepSummaryCallback(Callback):
    """A reproduce sweep gets report.md (mean and 95% interval per claim); any other sweep summary.csv."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        directory = Path(config.hydra.sweep.dir)
        if any(directory.glob("*/report.json")):
            aggregate_reports(directory)
            results_console.print(f"wrote {directory / 'report.md'} (mean and 95% interval per claim over the runs)")
        elif any(directory.glob("*/metrics.json")):
            summarize(directory)
