"""Column names of a card's local data file, read from its first row or header only, for checks at validate time.

Validate must stay instant and must not fail on data: a first line that is not UTF-8, nested too deep to parse, or
a file that is not the format its name says gives no names here; the row reader later quarantines that row (or
names the file) with the reason. Nothing heavy is imported (validate never imports torch).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

# Enough for a header or a first row of any sensible width; a longer first line is simply not looked at.
PEEK_BYTES = 2**20


def first_row_keys(file: str | Path) -> set[str]:
    """Column names of a .jsonl (first non-blank line), .csv (header) or .parquet (schema) file; empty when they
    cannot be read cheaply (and for .json arrays, which would have to be read whole)."""
    name = str(file)
    try:
        if name.endswith(".jsonl"):
            return _jsonl_keys(Path(name))
        if name.endswith(".csv"):
            with open(name, "rb") as handle:
                head = handle.read(PEEK_BYTES).decode("utf-8-sig", errors="replace")
            header = next(csv.reader(io.StringIO(head)), [])
            return {column.strip() for column in header}
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq  # light, and only for parquet cards

            return set(pq.read_schema(name).names)
    except (OSError, ValueError, csv.Error, RecursionError):  # pyarrow's ArrowInvalid is a ValueError
        return set()
    return set()


def _jsonl_keys(path: Path) -> set[str]:
    with path.open("rb") as handle:
        for raw in iter(lambda: handle.readline(PEEK_BYTES), b""):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8-sig"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                return set()
            return set(row) if isinstance(row, dict) else set()
    return set()
