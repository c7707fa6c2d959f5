"""Rejected rows: the append-only quarantine file (card, file, row number, reason, the raw row) and the grouping of
reasons that ``data_stats.json`` counts, so nothing a card held is lost silently."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

# A quarantined row's raw copy is left out past this size: card, file and row number still find it in the source.
MAX_QUARANTINED_RAW = 2**20


class Quarantine:
    """Append-only jsonl of rejected rows with card name, file, row number and reason (nothing is silently lost)."""

    def __init__(self, path: Path | None):
        self.path = path
        # backslashreplace: a lone surrogate in a raw row (JSON's "\ud800") is written as that same JSON escape
        self._fh = path.open("w", encoding="utf-8", errors="backslashreplace") if path else None

    def add(self, card: str, file: str, row: int, reason: str, raw) -> None:
        if self._fh:
            record = {"card": card, "file": file, "row": row, "reason": reason, "raw": raw}
            self._fh.write(record_line(record) + "\n")

    def close(self) -> None:
        if self._fh:
            self._fh.close()


def record_line(record: dict) -> str:
    """One quarantine record as a line of strict JSON: NaN/inf (a parquet float column) written as strings, and a
    raw row too large to copy replaced by a note of its size."""
    try:
        line = json.dumps(record, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:
        line = json.dumps({**record, "raw": _finite(record["raw"])}, ensure_ascii=False, default=str)
    if len(line) > MAX_QUARANTINED_RAW:
        note = f"not copied: {len(line):,} characters; find it by file and row"
        line = json.dumps({**record, "raw": None, "raw_note": note}, ensure_ascii=False)
    return line


def _finite(value):
    """``value`` with non-finite floats as strings ('nan', 'inf'); rows reaching here are at most MAX_NESTING deep."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def reason_key(reason: str) -> str:
    """Group reasons for counting ("message 3: unknown role 'bot'" → "unknown role", "message 0 is not an object"
    → "message N is not an object")."""
    text = re.sub(r"^(?:message|turn) \d+: ", "", reason)
    text = re.sub(r"\b(message|turn|part) \d+\b", r"\1 N", text)
    return text.split(" (")[0].split(":")[0].split(" '")[0].split(" {")[0]
