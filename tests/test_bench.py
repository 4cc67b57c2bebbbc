"""`advx bench` end to end on synthetic data, at sizes that take seconds: every row prints, and where torchattacks
is installed (`make bench-deps`; not part of `make install`) advx's final iterate agrees with it."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from advx import bench
from conftest import unwrapped

QUICK = ["bench", "--dataset", "synthetic", "--device", "cpu", "--epochs", "1", "--images", "40", "--repeats", "1"]


@pytest.fixture
def small_attacks(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Fewer attack steps and a shorter robust training; records every row of the torchattacks tables."""
    monkeypatch.setattr(bench, "STEPS", 5)
    monkeypatch.setattr(bench, "ROBUST_EPOCHS", 1)
    monkeypatch.setattr(bench, "ROBUST_IMAGES", 300)
    rows: list[list[str]] = []
    compare = bench._compare

    def record(*args, **kwargs):
        cells, problem = compare(*args, **kwargs)
        rows.append(cells)
        return cells, problem

    monkeypatch.setattr(bench, "_compare", record)
    return rows


def test_bench_compares_with_torchattacks(advx, small_attacks):
    result = advx(*QUICK, "--part", "attacks")
    assert result.exit_code == 0, result.output
    text = unwrapped(result.output)
    assert "threads" in text and "trainingepoch" not in text
    if importlib.util.find_spec("torchattacks") is None:
        assert "makebench-deps" in text
        return
    labels = [row[0] for row in small_attacks]
    assert labels == 2 * ["FGSM Linf", "PGD-5 Linf", "PGD-5 L2", "PGD-5 Linf, random start",
                          "PGD-5 L2, random start", "APGD-CE Linf, 5 steps"]
    for row in small_attacks:
        assert unwrapped(row[0]) in text
        if "APGD" in row[0]:  # any fooling iterate counts in both; their starts differ: accuracies within slack
            assert abs(float(row[1]) - float(row[4])) <= max(1 / 40, bench.APGD_SLACK), row
            continue
        their, final, best = float(row[1]), float(row[2]), float(row[4])
        assert row[3] == "0", row  # the same images, the same starts: advx's final iterate is torchattacks'
        assert their == final and best <= final, row  # the best iterate can only be lower
    assert "DISAGREEMENT" not in text


def test_bench_without_torchattacks_times_the_bare_loops_and_says_how_to_install_it(advx, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # `import torchattacks` raises ImportError
    result = advx(*QUICK)
    assert result.exit_code == 0, result.output
    text = unwrapped(result.output)
    assert "threads" in text and "trainingepoch" in text and "FGSMpassover500testimages" in text
    assert "makebench-deps" in text
