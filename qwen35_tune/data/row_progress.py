"""A live count of the rows read from a card, on the terminal only.

Normalising and checking rows runs in the main process before any ``datasets.map`` bar appears; on a large local
file or a streamed Hub dataset that is minutes with nothing on screen. The count (no total: a stream has none) goes
to stderr on the main rank only, is skipped when stderr is not a live terminal (``qwen35_tune.terminal``: CI logs
stay clean), and disappears when the card is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_STEP = 1000  # rows per refresh: cheap enough to leave on for millions of rows


def counted(rows: Iterable[T], card_name: str) -> Iterator[T]:
    """``rows`` unchanged, with a 'reading card NAME: N rows' counter while they are read."""
    import sys

    from qwen35_tune.terminal import shows_live_progress

    if not shows_live_progress(sys.stderr):
        yield from rows
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)

    columns = (SpinnerColumn(), TextColumn("reading card {task.description}: {task.completed:,} rows"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(card_name, total=None)
        for number, row in enumerate(rows, start=1):
            if number % _STEP == 0:
                progress.update(task, completed=number)
            yield row
