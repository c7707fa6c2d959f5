"""The training data of a run with streaming cards: a mixture of sources, packed on the fly, resumable exactly.

Sources (``data.stream_sources``) are drawn by token share: the next sample comes from the source with the fewest
tokens taken relative to its card weight, so a ``weight: 9`` corpus next to a ``weight: 1`` chat replay gives 90% /
10% of the tokens, whatever the documents' lengths. Samples are packed (``data.stream_pack``) into rows of
``train.packing_length`` with ``seq_lengths``, or, without ``train.packing``, handed out one per row.

Exact resume. The data loader runs ahead of training, so the state that matters is the one after the last row the
trainer actually trained. Each row carries its number (``stream_step``); a snapshot of the small state (cursors,
counts, the packing pool, rows already packed but not handed out) is kept per row until the trainer reports the row
trained (``commit``). Dedupe-filter additions and quarantine lines are held back per row until then too
(``data.bloom``). ``state_dict`` is the committed state, and every iteration starts from it, so a stream that is
iterated again, or restored from a checkpoint, yields exactly the rows an uninterrupted run would have trained next.
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from pathlib import Path

from torch.utils.data import IterableDataset

from qwen35_tune.data.quarantine import record_line
from qwen35_tune.data.stream_pack import StreamPacker
from qwen35_tune.data.stream_sources import ReplaySource, TextSource

log = logging.getLogger(__name__)
STATE_VERSION = 1


class StreamQuarantine:
    """Bad rows of streaming cards, written (by rank 0) once the row that read them is trained; resumable by size."""

    def __init__(self, path: Path | None):
        self.path = path
        self._pending: deque[tuple[int, str]] = deque()
        self.size = 0

    def add(self, step: int, card: str, file: str, row: int, reason: str, raw) -> None:
        if self.path is not None:
            record = {"card": card, "file": file, "row": row, "reason": reason, "raw": raw}
            self._pending.append((step, record_line(record) + "\n"))

    def commit(self, step: int) -> None:
        lines = []
        while self._pending and self._pending[0][0] <= step:
            lines.append(self._pending.popleft()[1])
        self._write(lines)

    def flush_all(self) -> str:
        """Write every pending line (the run stops on them); the sentence that says where they are."""
        self._write([line for _, line in self._pending])
        self._pending.clear()
        return f"The rows, with file, row number and reason, are in {self.path}. " if self.path else ""

    def _write(self, lines: list[str]) -> None:
        if lines and self.path is not None:
            with self.path.open("a", encoding="utf-8", errors="backslashreplace") as fh:
                fh.write("".join(lines))
            self.size = self.path.stat().st_size

    def discard_pending(self) -> None:
        self._pending.clear()

    def restore(self, size: int) -> None:
        """Cut the file back to what the checkpoint had committed (lines of rows trained after it come again)."""
        self._pending.clear()
        self.size = size
        if self.path is not None:
            with self.path.open("a+b") as fh:
                fh.truncate(size)


class StreamingTrainData(IterableDataset):
    """Rows of a streaming run for one rank (see the module docstring); ``stream_step`` numbers them from 1."""

    def __init__(self, sources: list[TextSource | ReplaySource], weights: list[float], packing_length: int | None,
                 quarantine: StreamQuarantine):
        self.sources, self.weights = sources, weights
        self.packing_length, self.quarantine = packing_length, quarantine
        self._snapshots: dict[int, dict] = {}
        self._committed = self._state_now(initial=True)

    # -- the stream ---------------------------------------------------------------------------------------------
    def __iter__(self):
        self._restore(self._committed)
        while True:
            while not self._outbox:
                self._draw()
            row = self._outbox.popleft()
            self._step += 1
            for source, tokens in row.pop("source_tokens").items():
                self._trained_tokens[source] += tokens
            self._snapshots[self._step] = self._state_now()
            yield {**row, "stream_step": self._step}

    def _draw(self) -> None:
        """One sample from the source furthest below its token share, into the packer (or straight out)."""
        index = min(range(len(self.sources)), key=lambda i: (self._taken[i] / self.weights[i], i))
        ids, labels = self.sources[index].next_sample(self._step + 1)
        self._taken[index] += len(ids)
        if self._packer is None:
            self._outbox.append({"input_ids": ids, "labels": labels, "source_tokens": {index: len(ids)}})
            return
        for row in self._packer.add(ids, labels, index):
            origins = row.pop("origins")
            tokens: dict[int, int] = {}
            for origin, length in zip(origins, row["seq_lengths"], strict=True):
                tokens[origin] = tokens.get(origin, 0) + length
            self._outbox.append({**row, "source_tokens": tokens})

    # -- resume -------------------------------------------------------------------------------------------------
    def commit(self, step: int) -> None:
        """The trainer trained rows up to ``step``: their state becomes the one a checkpoint saves."""
        if step not in self._snapshots:
            return
        self._committed = self._snapshots[step]
        for old in [s for s in self._snapshots if s <= step]:
            del self._snapshots[old]
        for source in self.sources:
            if isinstance(source, TextSource) and source.bloom is not None:
                source.bloom.commit(step)
        self.quarantine.commit(step)
        self._committed["quarantine_size"] = self.quarantine.size

    def state_dict(self) -> dict:
        """The committed state: small JSON (``state``) and the dedupe filters' bits (``filters``, by card)."""
        filters = {s.name: s.bloom.state() for s in self.sources if isinstance(s, TextSource) and s.bloom is not None}
        return {"state": copy.deepcopy(self._committed), "filters": filters}

    def load_state_dict(self, saved: dict) -> None:
        state = saved["state"]
        if state.get("version") != STATE_VERSION or [s["name"] for s in state["sources"]] != self.names:
            raise ValueError(f"the checkpoint's data stream has sources {[s['name'] for s in state['sources']]}, this "
                             f"run {self.names}")
        for source in self.sources:
            if isinstance(source, TextSource) and source.bloom is not None:
                source.bloom.load(saved["filters"][source.name])
        self.quarantine.restore(int(state.get("quarantine_size", 0)))
        self._committed = copy.deepcopy(state)
        self._snapshots.clear()

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    def _state_now(self, initial: bool = False) -> dict:
        if initial:
            return {"version": STATE_VERSION, "step": 0, "taken": [0] * len(self.sources), "packer": [],
                    "outbox": [], "trained_tokens": [0] * len(self.sources),
                    "sources": [{"name": s.name, **s.state()} for s in self.sources],
                    "quarantine_size": self.quarantine.size}  # fmt: skip
        return {"version": STATE_VERSION, "step": self._step, "taken": list(self._taken),
                "packer": self._packer.state() if self._packer else [],
                "outbox": copy.deepcopy(list(self._outbox)),
                "trained_tokens": list(self._trained_tokens),
                "sources": [{"name": s.name, **s.state()} for s in self.sources],
                "quarantine_size": self.quarantine.size}  # fmt: skip

    def _restore(self, state: dict) -> None:
        for source in self.sources:
            if isinstance(source, TextSource) and source.bloom is not None:
                source.bloom.discard_pending()
        self.quarantine.discard_pending()
        self._snapshots.clear()
        self._step, self._taken = int(state["step"]), list(state["taken"])
        self._trained_tokens = list(state["trained_tokens"])
        self._packer = StreamPacker(self.packing_length) if self.packing_length else None
        if self._packer is not None:
            self._packer.load(state["packer"])
        self._outbox = deque(copy.deepcopy(state["outbox"]))
        for row in self._outbox:  # JSON turned the source keys into strings
            row["source_tokens"] = {int(k): v for k, v in row["source_tokens"].items()}
        for source, saved in zip(self.sources, state["sources"], strict=True):
            source.load({k: v for k, v in saved.items() if k != "name"})

    # -- what happened ------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        """Per source, at the last trained row: tokens trained and the counts of what happened to its rows."""
        state, out = self._committed, []
        for source, saved, tokens in zip(self.sources, state["sources"], state["trained_tokens"], strict=True):
            entry = {"name": source.name, "streaming": isinstance(source, TextSource), "tokens": tokens,
                     **saved["counts"]}  # fmt: skip
            if isinstance(source, TextSource):
                entry.update(bad=saved["bad"], epochs=saved["epoch"] + 1)
            out.append(entry)
        return {"rows": state["step"], "sources": out}


SAMPLE_DOCUMENTS = 1000  # `data stats` on a streaming card reads this many of its documents, not the whole corpus


def sample_stream(stream: StreamingTrainData, documents: int = SAMPLE_DOCUMENTS, max_rows: int = 100_000) -> dict:
    """Counts of a bounded sample: rows are drawn until every streaming card has read ``documents`` documents (or
    finished a pass); returns the stats, the sampled rows' token lengths and how much was read."""
    texts = [s for s in stream.sources if isinstance(s, TextSource)]
    stream.quarantine.restore(0)
    lengths: list[int] = []
    step = 0
    for row in stream:
        lengths.append(len(row["input_ids"]))
        step = row["stream_step"]
        stream.commit(step)  # as training would: no per-row snapshot is kept
        if all(s.seen_rows >= documents or s.epoch > 0 for s in texts) or step >= max_rows:
            break
    for source in stream.sources:
        source.close()
    read = {s.name: s.seen_rows for s in texts}
    return {**stream.stats(), "sample": {"documents_read": read, "limit": documents, "row_lengths": lengths,
                                         "whole_pass": {s.name: s.epoch > 0 for s in texts}}}

