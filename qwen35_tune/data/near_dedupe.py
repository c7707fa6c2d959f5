"""Keys that find duplicate documents: one exact key per document, and MinHash LSH band keys for near-duplicates.

The MinHash signature is datasketch's (``MinHash`` over the document's word shingles, with permutations made once).
Its LSH indexes do not fit a stream of unknown length: ``MinHashLSH`` keeps every key in memory, ``MinHashLSHBloom``
adds to its filters at once (``data.bloom`` says why we cannot). So the banding is done here: the signature is cut
into ``bands`` bands of ``rows`` values, each band hashed to one 64-bit key; two documents whose Jaccard similarity
is ``s`` share a band with probability ``1 - (1 - s**rows)**bands``, an S-curve centred on ``threshold``.
A document is a near-duplicate when any of its band keys was seen before (``data.bloom.PendingBloom``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
_EXACT_SEED = 0x9E3779B9  # the exact key's own hash seed, apart from the band keys' seeds (1..bands)


def exact_key(text: str) -> int:
    """64-bit hash of the text with case and whitespace normalised (as ``hygiene.row_hash`` normalises)."""
    import xxhash

    return xxhash.xxh3_64_intdigest(" ".join(text.lower().split()).encode("utf-8"), seed=_EXACT_SEED)


def lsh_shape(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) using most of the ``num_perm`` values (at least 85%) whose S-curve midpoint, the similarity
    ``(1 / bands) ** (1 / rows)`` a pair is caught at half the time, is closest to ``threshold``. (datasketch's
    MinHashLSH instead minimises the false positive plus false negative areas, which puts the midpoint well above the
    threshold asked for: 0.84 for 0.8 at 128 permutations, missing most pairs at 0.8.)"""
    shapes = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1) if b * r >= 0.85 * num_perm]
    return min(shapes, key=lambda s: (abs((1 / s[0]) ** (1 / s[1]) - threshold), -s[0] * s[1]))


@dataclass(frozen=True)
class NearDuplicateKeys:
    """Band keys of documents for near-duplicate detection (picklable: dataloader workers compute them)."""

    num_perm: int
    shingle_words: int
    bands: int
    rows: int
    seed: int = 1

    @classmethod
    def for_threshold(cls, threshold: float, num_perm: int, shingle_words: int) -> NearDuplicateKeys:
        try:  # said before any document is read (workers would otherwise fail on it one by one)
            import datasketch  # noqa: F401
        except ImportError:
            from qwen35_tune.errors import UserError

            raise UserError("data.near_dedupe needs datasketch: pip install 'qwen35-tune[cpt]' (or remove "
                            "data.near_dedupe; exact dedupe needs nothing extra)") from None
        bands, rows = lsh_shape(threshold, num_perm)
        return cls(num_perm, shingle_words, bands, rows)

    def shingles(self, text: str) -> set[bytes]:
        """The document's word n-grams (lower-cased); a document shorter than n words is one shingle."""
        words = _WORD.findall(text.lower())
        n = self.shingle_words
        if len(words) < n:
            return {" ".join(words).encode("utf-8")} if words else set()
        return {" ".join(words[i : i + n]).encode("utf-8") for i in range(len(words) - n + 1)}

    def keys(self, text: str) -> np.ndarray:
        """One 64-bit key per band (empty for a document without words)."""
        import xxhash
        from datasketch import MinHash

        shingles = self.shingles(text)
        if not shingles:
            return np.zeros(0, dtype=np.uint64)
        signature = MinHash(num_perm=self.num_perm, seed=self.seed, hashfunc=xxhash.xxh32_intdigest,
                            permutations=_permutations(self.num_perm, self.seed), scheme="affine32")
        signature.update_batch(list(shingles))
        values = signature.hashvalues.astype(np.uint64)
        return np.array([xxhash.xxh64_intdigest(values[b * self.rows : (b + 1) * self.rows].tobytes(), seed=b + 1)
                         for b in range(self.bands)], dtype=np.uint64)  # fmt: skip


_PERMUTATIONS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's permutations for (num_perm, seed), made once per process (MinHash would redraw them per
    document)."""
    if (num_perm, seed) not in _PERMUTATIONS:
        from datasketch import MinHash

        _PERMUTATIONS[num_perm, seed] = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    return _PERMUTATIONS[num_perm, seed]
