"""The sources a streaming mixture draws samples from: a streaming text card, or a card rendered up front and replayed.

A ``TextSource`` turns its card's documents (``data.stream_docs``) into samples of at most ``train.max_length``
tokens: the dedupe filter (exact and MinHash keys, ``data.bloom``) decides on every document, this rank tokenises the
ones it owns and kept, appends ``<|endoftext|>`` and hands them out chunk by chunk. Its state (the next document's
cursor, the document in progress and the token offset in it, the counts) is small; a restored source re-reads the
document in progress and continues at the same token. A ``ReplaySource`` cycles through rendered rows (chat data
mixed in against forgetting) in a seeded order per cycle, each rank its own share.
"""

from __future__ import annotations

import random
from collections import Counter

from qwen35_tune.data.bloom import PendingBloom
from qwen35_tune.data.quarantine import reason_key
from qwen35_tune.data.stream_docs import CardStream, Cursor, Document, prepare, prepared_documents, raw_documents
from qwen35_tune.errors import UserError

MIN_ROWS_FOR_BAD_FRACTION = 1000  # a streaming card's bad-row share is judged once this many rows (or a pass) are read
TEXT_COUNTS = ("rows", "documents", "chunked", "chunks", "duplicate", "near_duplicate", "length", "language",
               "contaminated")  # fmt: skip


class TextSource:
    """Samples of a streaming text card for one rank (see the module docstring)."""

    def __init__(self, spec: CardStream, encode, max_length: int, max_bad_fraction: float, bloom: PendingBloom | None,
                 quarantine, workers: int = 0):
        self.spec, self.encode, self.max_length, self.max_bad_fraction = spec, encode, max_length, max_bad_fraction
        self.bloom, self.quarantine, self.workers = bloom, quarantine, workers
        self.name = spec.name
        self._docs = None
        self.load(self.initial_state())

    @staticmethod
    def initial_state() -> dict:
        return {"next": Cursor().to_dict(), "doc": None, "offset": 0, "epoch": 0,
                "counts": dict.fromkeys(TEXT_COUNTS, 0), "bad": {}, "seen_rows": 0, "seen_bad": {}}

    def state(self) -> dict:
        return {"next": self._next.to_dict(), "doc": self._doc_at.to_dict() if self._doc_at else None,
                "offset": self._offset, "epoch": self.epoch, "counts": dict(self.counts), "bad": dict(self.bad),
                "seen_rows": self.seen_rows, "seen_bad": dict(self.seen_bad)}  # fmt: skip

    def load(self, state: dict) -> None:
        """Continue from ``state``: the reader reopens at the next document; a document in progress is read again."""
        self.close()
        self._next, self._offset, self.epoch = Cursor.from_dict(state["next"]), int(state["offset"]), state["epoch"]
        self.counts, self.bad = Counter(state["counts"]), Counter(state["bad"])
        self.seen_rows, self.seen_bad = int(state["seen_rows"]), Counter(state["seen_bad"])
        self._doc_at, self._ids = None, None
        if state["doc"] is not None:
            self._doc_at = Cursor.from_dict(state["doc"])
            doc = prepare(self.spec, *next(raw_documents(self.spec, self._doc_at)))
            self._ids = self.encode(doc.text)
        self._docs = prepared_documents(self.spec, self._next, self.workers)

    def close(self) -> None:
        if self._docs is not None:
            self._docs.close()  # stops dataloader workers
            self._docs = None

    def next_sample(self, step: int) -> tuple[list[int], list[int]]:
        """The next chunk of this rank's documents; filter additions and quarantine lines are tagged ``step``."""
        while self._ids is None:
            self._take(next(self._docs), step)
        start = self._offset
        chunk = self._ids[start : start + self.max_length]
        self.counts["chunks"] += 1
        if start == 0 and len(self._ids) > self.max_length:
            self.counts["chunked"] += 1  # documents split into several chunks
        self._offset += len(chunk)
        if self._offset >= len(self._ids):
            self._ids, self._doc_at, self._offset = None, None, 0
        return chunk, list(chunk)

    def _take(self, doc: Document, step: int) -> None:
        """Decide on one document (every rank sees every document, counts only its own); keep it if owned and kept."""
        self._next, epoch = doc.after, doc.at.epoch
        if epoch > self.epoch:  # a pass ended: its bad-row share is final, however few rows it had
            self._check_bad_fraction(pass_done=True)
            self.epoch = epoch
        self.seen_rows += 1
        self.counts["rows"] += doc.owned
        if doc.problem is not None:
            self._bad(doc, step)
            return
        self._check_bad_fraction()
        if self.bloom is not None and (reason := self._duplicate(doc, epoch, step)):
            self.counts[reason] += doc.owned
            return
        if not doc.owned:
            return
        if doc.dropped:
            self.counts[doc.dropped] += 1
            return
        self.counts["documents"] += 1
        self._ids, self._offset, self._doc_at = self.encode(doc.text), 0, doc.at

    def _duplicate(self, doc: Document, epoch: int, step: int) -> str | None:
        """'duplicate' / 'near_duplicate' when the filter has seen the document in this pass; else adds its keys."""
        if doc.exact is not None and self.bloom.contains(doc.exact, epoch):
            return "duplicate"
        near = [] if doc.near is None else doc.near.tolist()
        if any(self.bloom.contains(key, epoch) for key in near):
            return "near_duplicate"
        for key in ([doc.exact] if doc.exact is not None else []) + near:
            self.bloom.add(key, epoch, step)
        return None

    def _bad(self, doc: Document, step: int) -> None:
        reason = reason_key(doc.problem)
        self.seen_bad[reason] += 1
        if doc.owned:
            self.bad[reason] += 1
        if doc.at.epoch == 0:  # a later pass meets the same rows again
            self.quarantine.add(step, self.name, doc.file, doc.number, doc.problem, doc.raw)
        self._check_bad_fraction()

    def _check_bad_fraction(self, pass_done: bool = False) -> None:
        """Stop once enough rows are read (or a pass ended) and more of them are bad than the card allows."""
        bad = sum(self.seen_bad.values())
        if not bad or (self.seen_rows < MIN_ROWS_FOR_BAD_FRACTION and not pass_done and self.epoch == 0):
            return
        if bad / self.seen_rows <= self.max_bad_fraction:
            return
        where = self.quarantine.flush_all()
        reasons = "\n".join(f"  {n:6d}  {reason}" for reason, n in self.seen_bad.most_common())
        raise UserError(f"data card '{self.name}': {bad} of the first {self.seen_rows} rows read are bad "
                        f"({bad / self.seen_rows:.1%}), more than its max_bad_fraction {self.max_bad_fraction:.1%}. "
                        f"{where}Reasons:\n{reasons}")


class ReplaySource:
    """Rendered rows of a card, cycled in a seeded order per cycle; each rank takes its share of every cycle."""

    def __init__(self, name: str, rows: list[tuple[list[int], list[int]]], seed: int, rank: int, world: int):
        self.name, self.rows, self.seed, self.rank, self.world = name, rows, seed, rank, world
        self.counts = Counter()
        self.load({"cycle": 0, "index": 0, "counts": {}})

    def _order(self, cycle: int) -> list[int]:
        order = list(range(len(self.rows)))
        random.Random(f"{self.seed}/{self.name}/replay/{cycle}").shuffle(order)
        return order[self.rank :: self.world] if len(order) >= self.world else order

    def state(self) -> dict:
        return {"cycle": self._cycle, "index": self._index, "counts": dict(self.counts)}

    def load(self, state: dict) -> None:
        self._cycle, self._index = int(state["cycle"]), int(state["index"])
        self.counts = Counter(state["counts"])
        self._current = self._order(self._cycle)

    def close(self) -> None:
        pass

    def next_sample(self, step: int) -> tuple[list[int], list[int]]:
        if self._index >= len(self._current):
            self._cycle, self._index = self._cycle + 1, 0
            self._current = self._order(self._cycle)
        ids, labels = self.rows[self._current[self._index]]
        self._index += 1
        self.counts["rows"] += 1
        return list(ids), list(labels)
