"""quarantine.jsonl read in one pass into what a page can show: counts by card and reason, a few example rows of
each reason, and a bounded table of rows (10k quarantined rows must not make a 50 MB page)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from qwen35_tune.data.quarantine import reason_key
from qwen35_tune.report.jsonl_records import json_records

FIRST_ROWS = 100  # the table starts with the first rows in file order ...
PER_REASON = 5  # ... plus this many of every reason group beyond them ...
MAX_TABLE = 300  # ... and never more than this many rows in all
EXAMPLES = 3  # file:line examples listed next to each reason's count
RAW_CHARS = 300  # a raw row is shown up to this many characters


@dataclass
class QuarantineSample:
    """Counts of every quarantined row by (card, reason group) and the rows picked to be shown."""

    total: int = 0
    unreadable: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)  # (card, reason group) -> [row dicts]
    rows: list = field(default_factory=list)

    def reasons(self) -> list[dict]:
        """One entry per (card, reason group), most rows first."""
        return [{"card": card, "reason": reason, "count": n, "examples": self.examples.get((card, reason), [])}
                for (card, reason), n in self.counts.most_common()]


def _shown(record: dict) -> dict:
    raw = record.get("raw")
    if raw is None:  # too large to copy, or a line that was not even JSON: the file and line find it
        text = f"({record.get('raw_note') or 'not copied: see the file at this line'})"
    else:
        text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
    cut = len(text) > RAW_CHARS
    file = str(record.get("file", ""))
    return {"card": str(record.get("card", "")), "file": file, "file_name": Path(file).name or file,
            "row": record.get("row"), "reason": str(record.get("reason", "")),
            "raw": text[:RAW_CHARS] + ("…" if cut else ""), "raw_cut": cut}


def sample_quarantine(path: Path) -> QuarantineSample:
    """Read the quarantine file once (see the module doc for what is kept)."""
    out = QuarantineSample()
    if not path.exists():
        return out
    for record in json_records(path):
        if record is None:
            out.unreadable += 1
            continue
        out.total += 1
        key = (str(record.get("card", "")), reason_key(str(record.get("reason", ""))))
        out.counts[key] += 1
        seen = out.counts[key]
        if seen <= EXAMPLES:
            out.examples.setdefault(key, []).append(_shown(record))
        if len(out.rows) < MAX_TABLE and (out.total <= FIRST_ROWS or seen <= PER_REASON):
            out.rows.append(_shown(record))
    return out
