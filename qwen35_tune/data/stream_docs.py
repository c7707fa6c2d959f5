"""The documents of a streaming card, in one order every rank agrees on, with the work that needs no shared state.

Order: each pass (epoch) over the card's files takes them in a permutation drawn from the recipe's seed, the card's
name and the epoch; rows in file order; passes repeat until training stops (``train.max_steps``). A ``Cursor`` says
where a document starts (epoch, file slot, offset, row number) and its running index over all passes, so a stream can
restart at any document. Every data-parallel rank reads this same sequence: it owns the documents whose index is its
rank modulo the world size (disjoint shares whose union is every pass), and sees the others too, for the dedupe
filter, which therefore drops the same documents on every rank.

Per document (``prepare``): parse, normalise, exact and MinHash keys for every document; for the documents this
rank owns, the card's filters and eval-overlap check. With ``train.dataloader_num_workers`` > 0 this runs in worker
processes, document ``i`` in worker ``i`` modulo the worker count, merged back in order by torch's DataLoader
(round-robin over workers, so the main process receives exactly the sequence above). Tokenising and everything that
remembers (dedupe, packing) happens in the main process (``data.streaming``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from torch.utils.data import IterableDataset

from qwen35_tune.data.bad_row import BadRow
from qwen35_tune.data.formats import normalise_row
from qwen35_tune.data.near_dedupe import NearDuplicateKeys, exact_key
from qwen35_tune.data.row_limits import check_nesting
from qwen35_tune.data.text_filters import DocumentChecks
from qwen35_tune.data.text_readers import decode_row, read_rows


@dataclass(frozen=True)
class Cursor:
    """Where a document starts: pass, file slot in that pass's order, offset and rows before it in the file, and its
    running index over all passes."""

    epoch: int = 0
    slot: int = 0
    offset: int = 0
    number: int = 0
    index: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Cursor:
        return cls(**{k: int(v) for k, v in data.items()})


@dataclass(frozen=True)
class CardStream:
    """What a card's document stream needs (plain data: it is sent to dataloader workers)."""

    name: str
    files: tuple[str, ...]
    seed: int
    text_key: str
    sample_by: str
    columns: dict
    rank: int
    world: int
    dedupe: bool
    near: NearDuplicateKeys | None
    checks: DocumentChecks

    def order(self, epoch: int) -> list[str]:
        """The files of pass ``epoch`` in their seeded order."""
        return random.Random(f"{self.seed}/{self.name}/{epoch}").sample(self.files, len(self.files))

    def owns(self, index: int) -> bool:
        return index % self.world == self.rank


@dataclass
class Document:
    """One document of the stream, with what the stateless work found out about it."""

    at: Cursor
    after: Cursor
    file: str
    number: int
    owned: bool
    text: str | None = None
    problem: str | None = None  # a bad row's reason (quarantined)
    raw: object = None  # a bad row's raw form, for the quarantine
    exact: int | None = None
    near: np.ndarray | None = None
    dropped: str | None = None  # a filter's reason ('length', 'language', 'contaminated'); owned documents only
    fatal: str | None = None  # an error that ends the run (a worker reports it rather than raising)


def raw_documents(spec: CardStream, start: Cursor) -> Iterator[tuple[Cursor, Cursor, str, int, object]]:
    """(cursor, cursor after, file, row number, payload) for every row from ``start`` on, pass after pass.

    A full pass that finds no row at all is a UserError (the stream would never yield)."""
    from qwen35_tune.errors import UserError

    cursor = start
    while True:
        order, found = spec.order(cursor.epoch), False
        for slot in range(cursor.slot, len(order)):
            offset, number = (cursor.offset, cursor.number) if slot == cursor.slot else (0, 0)
            for row in read_rows(Path(order[slot]), offset, number, text_key=spec.text_key,
                                 sample_by=spec.sample_by, columns=[spec.text_key]):  # fmt: skip
                found = True
                at = Cursor(cursor.epoch, slot, offset, number, cursor.index)
                if row.next_offset < 0:  # the rest of the file cannot be read (a truncated gzip): the next file
                    cursor = Cursor(cursor.epoch, slot + 1, 0, 0, cursor.index + 1)
                    yield at, cursor, order[slot], row.number, row.payload
                    break
                cursor = Cursor(cursor.epoch, slot, row.next_offset, row.number, cursor.index + 1)
                offset, number = row.next_offset, row.number
                yield at, cursor, order[slot], row.number, row.payload
            cursor = replace(cursor, slot=slot + 1, offset=0, number=0)
        if not found and start == replace(start, slot=0, offset=0, number=0) and cursor.epoch == start.epoch:
            raise UserError(f"data card '{spec.name}': its files hold no rows ({len(spec.files)} files)")
        cursor = Cursor(cursor.epoch + 1, 0, 0, 0, cursor.index)
        start = cursor


def prepare(spec: CardStream, at: Cursor, after: Cursor, file: str, number: int, payload) -> Document:
    """The stateless work on one document (see the module docstring)."""
    doc = Document(at, after, file, number, spec.owns(at.index))
    row = decode_row(payload, number, spec.text_key)
    try:
        if isinstance(row, BadRow):
            raise row
        check_nesting(row)
        text = normalise_row(row, "text", spec.columns)["text"]
    except BadRow as exc:
        doc.problem, doc.raw = str(exc), None if isinstance(row, BadRow) else row
        return doc
    doc.exact = exact_key(text) if spec.dedupe else None
    doc.near = spec.near.keys(text) if spec.near is not None else None
    if doc.owned:  # another rank's document only feeds the dedupe filter here
        doc.text, doc.dropped = text, spec.checks.drop_reason(text)
    return doc


def prepared_documents(spec: CardStream, start: Cursor, workers: int = 0) -> Iterator[Document]:
    """Every document from ``start`` on, prepared; in ``workers`` processes when > 0, merged back in order."""
    if workers <= 0:
        for args in raw_documents(spec, start):
            yield prepare(spec, *args)
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(DocumentWork(spec, start, workers), batch_size=None, num_workers=workers,
                        collate_fn=_as_is, prefetch_factor=8)  # fmt: skip
    for doc in loader:
        if doc.fatal:
            from qwen35_tune.errors import UserError

            raise UserError(doc.fatal)
        yield doc


def _as_is(item):
    return item


class DocumentWork(IterableDataset):
    """Worker ``k`` of ``workers`` prepares the documents whose index is ``start.index + k`` modulo ``workers`` and
    skips the rest unparsed, so torch's round-robin merge of the workers returns them in stream order."""

    def __init__(self, spec: CardStream, start: Cursor, workers: int):
        self.spec, self.start, self.workers = spec, start, workers

    def __iter__(self):
        from torch.utils.data import get_worker_info

        from qwen35_tune.errors import UserError

        info = get_worker_info()
        worker = info.id if info is not None else 0
        try:
            for at, after, file, number, payload in raw_documents(self.spec, self.start):
                if (at.index - self.start.index) % self.workers == worker:
                    yield prepare(self.spec, at, after, file, number, payload)
        except UserError as exc:  # sent through the stream: a worker's exception would carry its traceback text
            yield Document(self.start, self.start, "", 0, False, fatal=str(exc))
