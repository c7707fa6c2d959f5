"""The records of a JSON-lines file the report reads (metrics, quarantine), tolerant of what a crash leaves."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def json_records(path: Path) -> Iterator[dict | None]:
    """Each non-blank line's object, or None for a line that is not one (a torn last line, a stray value): the
    callers count those as unreadable instead of failing the page."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            yield record if isinstance(record, dict) else None
