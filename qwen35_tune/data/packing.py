"""Pack tokenised rows into rows of at most a target length, best-fit-decreasing, never splitting a sample.

The bin packing is TRL's ``pack_dataset(strategy="bfd")`` (a segment-tree best-fit-decreasing over token lengths).
What we add: a seeded shuffle first (so the packed order is deterministic under ``recipe.seed`` and does not follow
the card order), one packing pass over the whole dataset (TRL packs per ``map`` batch, which leaves a part-filled
row at every batch edge), and a refusal to pack a sample longer than the target (TRL's "bfd" would truncate it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from qwen35_tune.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackingStats:
    """How well rows filled the packed slots: ``efficiency`` = real tokens / (packed rows x target length)."""

    samples: int
    packed_rows: int
    tokens: int
    target_length: int

    @property
    def efficiency(self) -> float:
        return self.tokens / max(1, self.packed_rows * self.target_length)

    def to_dict(self) -> dict:
        return {**self.__dict__, "efficiency": round(self.efficiency, 6)}


def pack_rows(dataset, target_length: int, seed: int, extra_columns: tuple[str, ...] = ()):
    """Pack a dataset of ``input_ids``/``labels`` rows into rows of <= ``target_length`` tokens with ``seq_lengths``.

    Each packed row lists its samples' lengths in ``seq_lengths`` (in row order); the packed collator turns them into
    per-sample positions and boundaries. ``extra_columns``: further token-aligned columns packed alongside
    (``data.pack_media`` passes a row index to learn each bin's members).
    """
    from trl import pack_dataset

    lengths = [len(ids) for ids in dataset["input_ids"]]
    too_long = [i for i, n in enumerate(lengths) if n > target_length]
    if too_long:
        raise UserError(
            f"train.packing_length: {len(too_long)} rows are longer than the packing length {target_length} "
            f"(longest {max(lengths)} tokens, e.g. row {too_long[0]}); raise train.packing_length to at least "
            "train.max_length"
        )
    shuffled = dataset.select_columns(["input_ids", "labels", *extra_columns]).shuffle(seed=seed).flatten_indices()
    packed = pack_dataset(shuffled, target_length, strategy="bfd", map_kwargs={"batch_size": max(1, len(shuffled))})
    return packed


def packing_stats(packed, target_length: int) -> PackingStats:
    """Counts for data_stats.json and the efficiency benchmark."""
    seq_lengths = packed["seq_lengths"]
    return PackingStats(
        samples=sum(len(s) for s in seq_lengths),
        packed_rows=len(seq_lengths),
        tokens=sum(sum(s) for s in seq_lengths),
        target_length=target_length,
    )
