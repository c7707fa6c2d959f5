"""`data stats` on a recipe with streaming cards: what a bounded sample of their documents shows, said as such."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qwen35_tune import strict_json
from qwen35_tune.data.streaming import SAMPLE_DOCUMENTS, sample_stream

_COLUMNS = ("rows", "bad", "duplicate", "near_duplicate", "language", "length", "contaminated", "documents",
            "chunked", "tokens")  # fmt: skip


@dataclass(frozen=True)
class StreamSample:
    """A sample's table (rich), the sentence saying how far it read, and its rows' lengths as a Dataset."""

    table: object
    note: str


def report_stream_sample(stream, out: Path, documents: int | None = None):
    """(Dataset of the sampled rows' lengths, StreamSample); the counts go into out/data_stats.json as
    ``stream_sample`` (with ``sampled: true``). ``documents``: per streaming card, default SAMPLE_DOCUMENTS."""
    from datasets import Dataset
    from rich.table import Table

    documents = documents or SAMPLE_DOCUMENTS
    stats = sample_stream(stream, documents)
    sample = stats.pop("sample")
    path = out / "data_stats.json"
    data_stats = json.loads(path.read_text()) if path.exists() else {}
    data_stats["stream_sample"] = {**stats, "sampled": True, "documents_read": sample["documents_read"],
                                   "whole_pass": sample["whole_pass"]}  # fmt: skip
    path.write_text(strict_json.dumps(data_stats, indent=2))
    table = Table(title=f"streaming cards: a sample of up to {documents:,} documents each, not the whole corpus")
    table.add_column("card")
    for column in _COLUMNS:
        table.add_column(column.replace("_", " "), justify="right")
    for source in stats["sources"]:
        if not source["streaming"]:
            continue
        cells = [sum(source["bad"].values()) if c == "bad" else source.get(c, 0) for c in _COLUMNS]
        table.add_row(source["name"], *(f"{c:,}" for c in cells))
    read = ", ".join(f"{name}: {n:,} documents read" + (" (the whole card)" if sample["whole_pass"][name] else "")
                     for name, n in sample["documents_read"].items())
    note = (f"streaming cards are counted on a sample ({read}); a run reads them as it trains and reports the "
            "real counts in data_stats.json ('stream'). Sampled bad rows: "
            f"{out / 'quarantine.stream.jsonl'}")
    rows = Dataset.from_dict({"input_ids": [[0] * n for n in sample["row_lengths"]]})
    return rows, StreamSample(table, note)
