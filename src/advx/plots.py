"""Figures for reports: matplotlib on the file-only Agg backend, one size and resolution for every PNG."""

from __future__ import annotations

import io
from pathlib import Path

from advx.runs import atomic_write_bytes
from advx.timing import section


def figure(size: tuple[float, float] = (6.4, 4.4), rows: int = 1, cols: int = 1):
    """A new figure drawn off-screen: (fig, ax), or (fig, axes[rows][cols]) for a grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if rows == cols == 1:
        return plt.subplots(figsize=size)
    return plt.subplots(rows, cols, figsize=size, squeeze=False)


def save(fig, out: Path, name: str) -> str:
    """Write `fig` to out/name (atomically: a killed run never leaves half a PNG), close it, and return the file
    name (for the report). The format follows the name's suffix."""
    import matplotlib.pyplot as plt

    with section("figures"):
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format=Path(name).suffix.lstrip(".") or "png", dpi=120)
        plt.close(fig)
        atomic_write_bytes(out / name, buffer.getvalue())
    return name
