"""Packing a stream: samples arrive one by one and leave as rows of at most ``length`` tokens, with their boundaries.

The whole-dataset packer (``data.packing``, TRL's best-fit-decreasing) needs every row up front. Over a stream, a
bounded pool of open rows does best-fit online: each sample goes into the open row it fills most tightly, a full row
leaves at once, and when no open row has room and the pool is full, the fullest row leaves to make space. A sample is
never split (chunking to ``train.max_length`` happened before), so ``seq_lengths`` keeps each sample apart in the
Gated DeltaNet and attention layers exactly as whole-dataset packing does. The pool is part of the stream's
resumable state (a few rows of token ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field

POOL_ROWS = 8


@dataclass
class OpenRow:
    """A packed row being filled: its samples' ids and labels, concatenated, and their lengths."""

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    seq_lengths: list[int] = field(default_factory=list)
    origins: list[int] = field(default_factory=list)  # which source each sample came from (for per-card counts)

    def as_row(self) -> dict:
        return {"input_ids": self.input_ids, "labels": self.labels, "seq_lengths": self.seq_lengths,
                "origins": self.origins}

    def to_dict(self) -> dict:
        return {"input_ids": list(self.input_ids), "labels": list(self.labels), "seq_lengths": list(self.seq_lengths),
                "origins": list(self.origins)}


class StreamPacker:
    """Online best-fit over at most ``pool`` open rows of ``length`` tokens."""

    def __init__(self, length: int, pool: int = POOL_ROWS):
        self.length, self.pool = length, pool
        self.rows: list[OpenRow] = []

    def add(self, input_ids: list[int], labels: list[int], origin: int = 0) -> list[dict]:
        """Place one sample; returns the rows that left the pool (full, or the fullest when space was needed)."""
        size = len(input_ids)
        if size > self.length:
            raise ValueError(f"a sample of {size} tokens does not fit packed rows of {self.length}")
        done: list[dict] = []
        fits = [r for r in self.rows if self.length - len(r.input_ids) >= size]
        if fits:
            row = min(fits, key=lambda r: self.length - len(r.input_ids))  # the tightest fit; the oldest on ties
        else:
            if len(self.rows) >= self.pool:
                fullest = max(self.rows, key=lambda r: len(r.input_ids))
                self.rows.remove(fullest)
                done.append(fullest.as_row())
            row = OpenRow()
            self.rows.append(row)
        row.input_ids.extend(input_ids)
        row.labels.extend(labels)
        row.seq_lengths.append(size)
        row.origins.append(origin)
        if len(row.input_ids) == self.length:
            self.rows.remove(row)
            done.append(row.as_row())
        return done

    def state(self) -> list[dict]:
        return [r.to_dict() for r in self.rows]

    def load(self, rows: list[dict]) -> None:
        self.rows = [OpenRow(list(r["input_ids"]), list(r["labels"]), list(r["seq_lengths"]), list(r["origins"]))
                     for r in rows]
