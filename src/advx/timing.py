"""Where a reproduction's wall time goes: named sections, each second charged to exactly one of them.

`record()` starts a tally; `section(name)` charges the time spent inside it to `name`, and a section opened
inside another pauses the outer one, so nested sections never count a second twice (a figure drawn inside an
analysis is charged to "figures", the rest of the analysis to its own name). Time outside every section is
the caller's to name (`Tally.rest`). Outside `record()` sections cost one clock read and record nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class Tally:
    """Seconds per section, in the order the sections were first entered."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()
        self._stack: list[list] = []  # [name, time the innermost section last resumed]

    def _charge(self, now: float) -> None:
        if self._stack:
            name, since = self._stack[-1]
            self.seconds[name] = self.seconds.get(name, 0.0) + now - since

    def enter(self, name: str) -> None:
        now = time.perf_counter()
        self._charge(now)
        self.seconds.setdefault(name, 0.0)
        self._stack.append([name, now])

    def leave(self) -> None:
        now = time.perf_counter()
        self._charge(now)
        self._stack.pop()
        if self._stack:
            self._stack[-1][1] = now

    def rest(self) -> float:
        """Seconds since `record()` began that no section holds."""
        return max(time.perf_counter() - self.started - sum(self.seconds.values()), 0.0)


_current: Tally | None = None


@contextlib.contextmanager
def record() -> Iterator[Tally]:
    """Tally the sections entered until the block ends (one tally at a time; an inner `record` replaces it)."""
    global _current
    outer, _current = _current, Tally()
    try:
        yield _current
    finally:
        _current = outer


@contextlib.contextmanager
def section(name: str) -> Iterator[None]:
    """Charge the time inside the block to `name` (the innermost open section takes the time)."""
    tally = _current
    if tally is None:
        yield
        return
    tally.enter(name)
    try:
        yield
    finally:
        tally.leave()
