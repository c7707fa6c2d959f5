"""Every token of every document is trained once, in order: documents shorter than, equal to and many times longer
than train.max_length, streamed or read up front; packing keeps every sample whole and apart."""

from __future__ import annotations

import random
import re
from collections import Counter

from qwen35_tune.data.chunking import chunk_bounds
from qwen35_tune.data.stream_pack import StreamPacker
from tests.unit.stream_kit import (
    build_stream,
    samples,
    stream_recipe,
    take,
    tokenised,
    write_shards,
    write_stream_card,
)

MAX_LENGTH = 64


def _corpus(tokenizer) -> list[str]:
    """Documents of every length class: short ones, one of exactly MAX_LENGTH tokens (with <|endoftext|>), and ones
    many times longer (also an exact multiple of it)."""
    rng = random.Random(3)
    words = "ledger accrual coupon tranche yield audit".split()

    def doc(i: int, n_words: int) -> str:
        return f"DOC{i} " + " ".join(rng.choice(words) for _ in range(n_words))

    equal = "DOCEQ"
    while len(tokenised(tokenizer, equal + " a")) <= MAX_LENGTH:
        equal += " a"
    multiple = "DOCMUL"
    while len(tokenised(tokenizer, multiple)) % MAX_LENGTH:
        multiple += " a"
    multiple_long = multiple
    while len(tokenised(tokenizer, multiple_long)) < 5 * MAX_LENGTH:
        multiple_long += " a" * MAX_LENGTH
        while len(tokenised(tokenizer, multiple_long)) % MAX_LENGTH:
            multiple_long += " a"
    docs = [doc(0, 3), equal, doc(1, 400), doc(2, 10), multiple_long, doc(3, 1), doc(4, 90), doc(5, 2000)]
    lengths = [len(tokenised(tokenizer, d)) for d in docs]
    assert min(lengths) < MAX_LENGTH and MAX_LENGTH in lengths and max(lengths) > 20 * MAX_LENGTH
    assert any(n > MAX_LENGTH and n % MAX_LENGTH == 0 for n in lengths)
    return docs


def test_streamed_chunks_concatenate_to_the_tokenised_corpus(tmp_path, tiny_tokenizer):
    docs = _corpus(tiny_tokenizer)
    write_shards(tmp_path / "corpus", docs, shards=3, kind=".jsonl.gz")
    card = write_stream_card(tmp_path, "corpus", "corpus/*.jsonl.gz")
    stream = build_stream(stream_recipe(tmp_path, [(card, 1.0)], train={"max_length": MAX_LENGTH}), tiny_tokenizer)
    spec = stream.sources[0].spec
    in_order = [doc for path in spec.order(0) for doc in docs[int(re.search(r"part-(\d+)", path)[1]) :: 3]]
    expected = [t for d in in_order for t in tokenised(tiny_tokenizer, d)]
    n_chunks = sum(len(chunk_bounds(len(tokenised(tiny_tokenizer, d)), MAX_LENGTH)) for d in docs)
    rows = take(stream, n_chunks + 3)
    chunks = samples(rows)
    assert all(len(c) <= MAX_LENGTH for c in chunks)
    assert [t for c in chunks[:n_chunks] for t in c] == expected  # every token once, in order
    assert chunks[n_chunks] == expected[: len(chunks[n_chunks])]  # then the next pass starts over
    assert all(row["labels"] == row["input_ids"] for row in rows)  # every token is trained
    stream.commit(rows[n_chunks - 1]["stream_step"])
    counts = stream.stats()["sources"][0]
    assert counts["documents"] == len(docs) and counts["tokens"] == len(expected) and counts["chunks"] == n_chunks
    assert counts["chunked"] == sum(len(tokenised(tiny_tokenizer, d)) > MAX_LENGTH for d in docs)


def test_cards_read_up_front_chunk_the_same_way(tmp_path, tiny_tokenizer):
    """A format: text card without streaming: documents over max_length are split, not truncated or dropped."""
    from qwen35_tune.data.build import build_datasets

    docs = _corpus(tiny_tokenizer)
    write_shards(tmp_path / "corpus", docs, shards=1, kind=".jsonl")
    (tmp_path / "corpus.yaml").write_text("name: corpus\nlicense: mit\nformat: text\n"
                                          "source: {path: corpus/part-000.jsonl}\n")
    for too_long in ("truncate", "drop"):  # chat rows' setting; documents are never cut or dropped
        recipe = stream_recipe(tmp_path, [(tmp_path / "corpus.yaml", 1.0)], data=f"  too_long: {too_long}\n",
                               train={"max_length": MAX_LENGTH})
        train, _, stats = build_datasets(recipe, tiny_tokenizer)
        expected = [t for d in docs for t in tokenised(tiny_tokenizer, d)]
        assert [t for ids in train["input_ids"] for t in ids] == expected
        assert max(len(ids) for ids in train["input_ids"]) == MAX_LENGTH and train["labels"] == train["input_ids"]
        [card] = stats["cards"]
        assert card["truncated"] == card["too_long_dropped"] == 0
        assert card["chunked"] == sum(len(tokenised(tiny_tokenizer, d)) > MAX_LENGTH for d in docs)


def test_packer_keeps_every_sample_whole_and_within_the_row(tmp_path):
    rng = random.Random(0)
    inputs = [[rng.randrange(1000) for _ in range(rng.choice([1, 5, 17, 40, 64]))] for _ in range(500)]
    packer, rows = StreamPacker(128, pool=4), []
    for i, ids in enumerate(inputs):
        rows.extend(packer.add(ids, [-100] + ids[1:], origin=i % 2))
    left = [r.as_row() for r in packer.rows]
    out = samples(rows + left)
    assert Counter(map(tuple, out)) == Counter(map(tuple, inputs))
    assert all(len(r["input_ids"]) <= 128 and sum(r["seq_lengths"]) == len(r["input_ids"]) == len(r["labels"])
               for r in rows)
    assert sum(len(r["input_ids"]) for r in rows) / (128 * len(rows)) > 0.9  # rows leave nearly full
