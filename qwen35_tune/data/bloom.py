"""A fixed-size Bloom filter whose additions take effect only when committed, for dedupe over a stream.

A streaming corpus is deduplicated with memory that does not grow with it: every document's keys (its exact hash,
its MinHash bands) are looked up in and added to a Bloom filter sized up front (``data.dedupe_capacity``). The data
loader runs ahead of training, so a key added for a document that was read but not yet trained must not be in the
filter a checkpoint saves (a resumed run would then drop that document as a duplicate of itself). Additions are
therefore pending, tagged with the packed row being built, until the trainer reports the row trained
(``commit(step)``); ``discard_pending`` drops the rest when the stream restarts from a checkpoint. Lookups see both.

Written here rather than taken from a library: the Bloom filters on PyPI (pybloomfilter3, rbloom, the one datasketch's
LSHBloom uses) add at once and cannot hold additions back per row; this is a numpy bit array and double hashing.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

_MASK64 = (1 << 64) - 1


def bloom_size(capacity: int, keys_per_item: int, false_positive: float) -> tuple[int, int]:
    """(bits, hashes) for ``capacity`` items of ``keys_per_item`` keys at a per-key false positive rate."""
    keys = max(1, capacity * keys_per_item)
    bits = max(64, math.ceil(-keys * math.log(false_positive) / math.log(2) ** 2))
    return bits, max(1, round(bits / keys * math.log(2)))


class PendingBloom:
    """Bloom filter over 64-bit keys with per-step pending additions; a new ``epoch`` starts an empty filter."""

    def __init__(self, bits: int, hashes: int):
        self.bits, self.hashes = bits, hashes
        self.array = np.zeros((bits + 7) // 8, dtype=np.uint8)
        self.epoch = 0  # the epoch the committed bits belong to
        self.committed_keys = 0
        self._pending: deque[tuple[int, int, int]] = deque()  # (step, epoch, key) in order of addition
        self._pending_set: set[tuple[int, int]] = set()  # (epoch, key)

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)

    def _positions(self, key: int) -> np.ndarray:
        low, high = key & 0xFFFFFFFF, (key >> 32) | 1  # double hashing: h1 + i * h2 (h2 odd)
        steps = np.arange(self.hashes, dtype=np.uint64)
        return (np.uint64(low) + steps * np.uint64(high)) % np.uint64(self.bits)

    def _in_bits(self, key: int) -> bool:
        pos = self._positions(key)
        return bool(np.all(self.array[pos >> np.uint64(3)] & (np.uint8(1) << (pos & np.uint64(7)).astype(np.uint8))))

    def contains(self, key: int, epoch: int) -> bool:
        """Whether ``key`` was added in ``epoch`` (committed or pending); may say yes wrongly at the filter's rate."""
        key &= _MASK64
        return (epoch, key) in self._pending_set or (epoch == self.epoch and self._in_bits(key))

    def add(self, key: int, epoch: int, step: int) -> None:
        """Add ``key`` for ``epoch``, taking effect when ``step`` is committed."""
        key &= _MASK64
        self._pending.append((step, epoch, key))
        self._pending_set.add((epoch, key))

    def commit(self, step: int) -> None:
        """Write every addition of rows up to ``step`` into the bits (a later epoch first clears them)."""
        while self._pending and self._pending[0][0] <= step:
            _, epoch, key = self._pending.popleft()
            self._pending_set.discard((epoch, key))
            if epoch != self.epoch:
                self.array[:] = 0
                self.epoch, self.committed_keys = epoch, 0
            pos = self._positions(key)
            np.bitwise_or.at(self.array, pos >> np.uint64(3), np.uint8(1) << (pos & np.uint64(7)).astype(np.uint8))
            self.committed_keys += 1

    def discard_pending(self) -> None:
        """Forget uncommitted additions (the stream restarts at the last committed row)."""
        self._pending.clear()
        self._pending_set.clear()

    def state(self) -> dict:
        """The committed filter, for a checkpoint."""
        return {"bits": self.bits, "hashes": self.hashes, "epoch": self.epoch, "committed_keys": self.committed_keys,
                "array": self.array}

    def load(self, state: dict) -> None:
        """Restore a checkpoint's committed filter (same size, else a ValueError the caller turns into advice)."""
        if (int(state["bits"]), int(state["hashes"])) != (self.bits, self.hashes):
            raise ValueError(f"the checkpoint's dedupe filter has {int(state['bits'])} bits, this run's "
                             f"{self.bits} (data.dedupe_capacity or data.near_dedupe changed)")
        self.array = np.array(state["array"], dtype=np.uint8)
        self.epoch, self.committed_keys = int(state["epoch"]), int(state["committed_keys"])
        self.discard_pending()
