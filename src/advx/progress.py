"""Rich progress bars for long loops; silent when disabled or when the console is not a terminal."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
console = Console(stderr=True)  # progress and logs share stderr, so stdout stays clean for results


def print_error(error: BaseException) -> None:
    """A user error (AdvxError) or an OSError as the one stderr line every bad input gets: `error: ...`. The
    message is printed literally (brackets in it, like [inf], are not rich markup)."""
    from advx.errors import os_error_line

    line = os_error_line(error) if isinstance(error, OSError) else str(error)
    console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)


class Bars:
    """Nested progress bars: an outer bar (epochs, eps values) and transient inner ones (batches)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and console.is_terminal
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, disable=not self.enabled,
        )

    def __enter__(self) -> Bars:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def outer(self, description: str, total: int, completed: int = 0) -> int:
        return self._progress.add_task(description, total=total, completed=completed, info="")

    def advance(self, task: int, info: str = "", by: int = 1) -> None:
        self._progress.update(task, advance=by, info=info)

    def inner(self, items: Iterable[T], description: str, total: int) -> Iterator[T]:
        """Iterate `items` under a transient bar that disappears when the loop ends."""
        if not self.enabled:
            yield from items
            return
        task = self._progress.add_task(description, total=total, info="")
        try:
            for item in items:
                yield item
                self._progress.advance(task)
        finally:
            self._progress.remove_task(task)



def log_handler() -> RichHandler:
    """The console log handler (Hydra's job_logging config builds it): plain lines on the progress console."""
    return RichHandler(console=console, show_time=False, show_path=False, markup=False)
