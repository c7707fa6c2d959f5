"""The packer and the packed collator: never split a sample, never exceed the target, -100 at every boundary."""

from __future__ import annotations

import random

import pytest
from datasets import Dataset

from qwen35_tune.data.packing import pack_rows, packing_stats
from qwen35_tune.errors import UserError
from qwen35_tune.train.collator import build_collator, check_packed_batch


def _rows(lengths: list[int]) -> Dataset:
    # Each sample's tokens encode (sample id, position) so a split or reordering inside a sample is visible.
    ids = [[i * 1000 + t for t in range(n)] for i, n in enumerate(lengths)]
    labels = [[-100] + row[1:] for row in ids]
    return Dataset.from_dict({"input_ids": ids, "labels": labels})


def _long_tailed(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(20, 120) if rng.random() < 0.9 else rng.randint(400, 960) for _ in range(n)]


def test_packer_keeps_every_sample_whole_and_within_target():
    lengths = _long_tailed(300)
    source = _rows(lengths)
    packed = pack_rows(source, 1024, seed=3)
    seen = []
    for row, seq_lengths in zip(packed["input_ids"], packed["seq_lengths"], strict=True):
        assert sum(seq_lengths) == len(row) <= 1024
        start = 0
        for n in seq_lengths:
            sample = row[start : start + n]
            sid = sample[0] // 1000
            assert sample == source[sid]["input_ids"], "a sample was split or altered"
            seen.append(sid)
            start += n
    assert sorted(seen) == list(range(len(lengths)))
    stats = packing_stats(packed, 1024)
    assert stats.samples == 300 and stats.tokens == sum(lengths) and stats.efficiency > 0.97


def test_packer_is_deterministic_under_the_seed():
    source = _rows(_long_tailed(200))
    first, again = pack_rows(source, 1024, seed=7), pack_rows(source, 1024, seed=7)
    other = pack_rows(source, 1024, seed=8)
    assert first["input_ids"] == again["input_ids"]
    assert first["input_ids"] != other["input_ids"]


def test_packer_refuses_a_sample_longer_than_the_target():
    with pytest.raises(UserError, match="train.packing_length.*longer than the packing length 100"):
        pack_rows(_rows([50, 101, 20]), 100, seed=0)


def test_packed_collator_marks_boundaries():
    packed = pack_rows(_rows([5, 9, 3, 12, 7]), 16, seed=0)
    features = [packed[i] for i in range(len(packed))]
    batch = build_collator(0, packed=True)(features)
    seq_lengths = [n for f in features for n in f["seq_lengths"]]
    check_packed_batch(batch, seq_lengths)  # positions, cu_seq_lens, max lengths, seq_idx, -100 at every start
    # Inside a sample the labels are untouched.
    flat_labels = [x for f in features for x in f["labels"]]
    keep = [i for i, p in enumerate(batch["position_ids"][0].tolist()) if p > 0]
    assert [batch["labels"][0, i].item() for i in keep] == [flat_labels[i] for i in keep]


def test_check_packed_batch_catches_a_leaking_label():
    packed = pack_rows(_rows([5, 9]), 16, seed=0)
    batch = build_collator(0, packed=True)([packed[0]])
    batch["labels"][0, batch["cu_seq_lens_q"][1]] = 42
    with pytest.raises(AssertionError, match="first label"):
        check_packed_batch(batch, packed[0]["seq_lengths"])


def test_padding_collator_pads_with_mask():
    batch = build_collator(0, packed=False)([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]},
                                             {"input_ids": [4], "labels": [4]}])  # fmt: skip
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"][1].tolist() == [4, -100, -100]
