"""Near-duplicate removal finds planted near-copies and keeps distinct documents (precision and recall on a planted
set), in fixed memory; the filter's additions wait for the rows that made them to be trained."""

from __future__ import annotations

import random
import re

import numpy as np

from qwen35_tune.data.bloom import PendingBloom, bloom_size
from qwen35_tune.data.near_dedupe import NearDuplicateKeys, lsh_shape
from tests.unit.stream_kit import build_stream, needs_cpt_extra, stream_recipe, write_shards, write_stream_card

pytestmark = needs_cpt_extra

VOCABULARY = [f"w{i}" for i in range(3000)]


def _edited(rng: random.Random, words: list[str], share: float) -> list[str]:
    """``words`` with about ``share`` of them substituted, deleted or followed by an inserted word."""
    out = []
    for word in words:
        roll = rng.random()
        if roll < share / 3:
            out.append(rng.choice(VOCABULARY))
        elif roll < 2 * share / 3:
            continue
        elif roll < share:
            out.extend([word, rng.choice(VOCABULARY)])
        else:
            out.append(word)
    return out


def _planted(seed: int = 0):
    """(documents, planted near-duplicates' markers, hard negatives' markers): 240 distinct documents, 60 near-copies
    (0.2-1.2% of words edited), 40 sharing half their words with another (to be kept), and 20 exact copies."""
    rng = random.Random(seed)
    originals = {f"ID{i}": [rng.choice(VOCABULARY) for _ in range(rng.randint(80, 400))] for i in range(240)}
    docs = {marker: words for marker, words in originals.items()}
    planted = {}  # near-copy -> its original
    for i in range(60):
        source = f"ID{rng.randrange(240)}"
        docs[f"NEAR{i}"] = _edited(rng, originals[source], rng.uniform(0.002, 0.012))
        planted[f"NEAR{i}"] = source
    copies = [f"ID{rng.randrange(240)}" for _ in range(20)]  # exact copies: the same text, marker included
    negatives = set()
    for i in range(40):
        words = originals[f"ID{rng.randrange(240)}"]
        half = words[: len(words) // 2] + [rng.choice(VOCABULARY) for _ in range(len(words) - len(words) // 2)]
        docs[f"HALF{i}"] = half
        negatives.add(f"HALF{i}")
    order = list(docs)
    rng.shuffle(order)
    originals_first = sorted(order, key=lambda m: not m.startswith("ID"))  # each copy after its original
    texts = [f"{marker} " + " ".join(docs[marker]) for marker in originals_first + copies]
    return texts, planted, negatives


def test_planted_near_duplicates_precision_and_recall(tmp_path, tiny_tokenizer):
    texts, planted, negatives = _planted()
    write_shards(tmp_path / "corpus", texts, shards=1, kind=".jsonl")
    card = write_stream_card(tmp_path, "corpus", "corpus/*.jsonl")
    recipe = stream_recipe(tmp_path, [(card, 1.0)], data="  near_dedupe: {threshold: 0.8}\n",
                           train={"max_length": 4096})
    stream = build_stream(recipe, tiny_tokenizer)
    source = stream.sources[0]
    kept = []
    for row in stream:
        if source.epoch > 0:
            break
        kept.append(re.match(r"[A-Z]+\d+", tiny_tokenizer.decode(row["input_ids"][:12]))[0])
    assert len(kept) == len(set(kept)), "an exact copy was kept"
    dropped = {t.split(" ")[0] for t in texts} - set(kept)
    by_marker = {t.split(" ")[0]: t for t in texts}
    keys = NearDuplicateKeys.for_threshold(0.8, 128, 5)
    similarity = {copy: _jaccard(keys, by_marker[copy], by_marker[source]) for copy, source in planted.items()}
    above = {copy for copy, s in similarity.items() if s >= 0.85}
    assert len(above) >= 40  # the planted set is what it says
    precision = len(dropped & set(planted)) / max(1, len(dropped))
    recall = len(dropped & above) / len(above)
    assert recall >= 0.95 and precision == 1.0, (precision, recall, sorted(above - dropped), sorted(dropped - above))
    assert not dropped & negatives  # sharing half a document (similarity about 1/3) is not a near-duplicate
    counts = source.counts
    assert counts["duplicate"] == 20 and counts["near_duplicate"] == len(dropped)


def _jaccard(keys: NearDuplicateKeys, a: str, b: str) -> float:
    """True Jaccard similarity of two documents' shingles (ignoring their markers)."""
    x, y = keys.shingles(a.split(" ", 1)[1]), keys.shingles(b.split(" ", 1)[1])
    return len(x & y) / len(x | y)


def test_lsh_shape_puts_the_s_curve_midpoint_at_the_threshold():
    for threshold in (0.5, 0.7, 0.8, 0.9):
        bands, rows = lsh_shape(threshold, 128)
        assert bands * rows <= 128
        assert abs((1 / bands) ** (1 / rows) - threshold) < 0.03


def test_band_keys_of_near_copies_meet_and_of_strangers_do_not():
    keys = NearDuplicateKeys.for_threshold(0.8, 128, 5)
    rng = random.Random(1)
    words = [rng.choice(VOCABULARY) for _ in range(300)]
    near = _edited(rng, words, 0.01)
    other = [rng.choice(VOCABULARY) for _ in range(300)]
    a, b, c = (set(keys.keys(" ".join(w)).tolist()) for w in (words, near, other))
    assert a & b and not a & c
    assert keys.keys("").size == 0 and keys.keys("one two").size == keys.bands  # short texts: one shingle


def test_bloom_memory_is_fixed_and_its_false_positives_stay_near_the_design_rate():
    bits, hashes = bloom_size(20_000, 1, 1e-3)
    bloom = PendingBloom(bits, hashes)
    size = bloom.nbytes
    rng = np.random.default_rng(0)
    for key in rng.integers(0, 2**63, 20_000).tolist():
        bloom.add(key, 0, 1)
    bloom.commit(1)
    assert bloom.nbytes == size == (bits + 7) // 8
    probes = rng.integers(0, 2**63, 20_000).tolist()
    rate = sum(bloom.contains(key, 0) for key in probes) / len(probes)
    assert rate < 3e-3


def test_additions_wait_for_their_row_and_a_new_pass_starts_empty():
    bloom = PendingBloom(*bloom_size(100, 1, 1e-4))
    bloom.add(7, epoch=0, step=3)
    assert bloom.contains(7, 0) and not bloom.contains(7, 1)
    assert not bloom.state()["array"].any()  # not committed: a checkpoint now would not hold it
    bloom.commit(2)
    assert not bloom.state()["array"].any()
    bloom.commit(3)
    assert bloom.state()["array"].any() and bloom.contains(7, 0)
    bloom.add(8, epoch=1, step=4)
    bloom.commit(4)
    assert bloom.contains(8, 1) and not bloom.contains(7, 1) and not bloom.contains(7, 0)
    bloom.add(9, epoch=1, step=5)
    bloom.discard_pending()
    assert not bloom.contains(9, 1)
