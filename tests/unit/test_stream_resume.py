"""A stream restored from the state saved at a trained row yields exactly the rows an uninterrupted stream yields
after it: mid-document, with rows packed but not yet handed out, dedupe filters holding back what was read ahead,
a chat replay mixed in, the quarantine cut back to what was trained. Worker processes and data-parallel ranks change
who does the work, never which rows come out."""

from __future__ import annotations

import json

import pytest

from qwen35_tune.train.stream_trainer import load_stream_state, save_stream_state
from tests.unit.data_kit import chat_row, write_card
from tests.unit.stream_kit import (
    build_stream,
    documents,
    needs_cpt_extra,
    samples,
    stream_recipe,
    take,
    write_shards,
    write_stream_card,
)


@pytest.fixture
def corpus(tmp_path):
    """A streaming card with exact and near duplicates and a bad row, next to a chat card replayed 1:3."""
    docs = documents(40, lengths=(8, 30, 90))
    docs += [docs[3], docs[7].replace("DOC7", "DOC7 restated", 1)]  # an exact and a near duplicate
    paths = write_shards(tmp_path / "corpus", docs, shards=3)
    paths[1].with_name("part-009.jsonl").write_text('{"text": 5}\n{"text": "DOC99 tail end"}\n')  # a bad row
    card = write_stream_card(tmp_path, "corpus", "corpus/*", max_bad_fraction=0.5)
    chat = write_card(tmp_path, "chat", [chat_row(f"q{i}?", f"answer {i}") for i in range(7)])
    return tmp_path, [(card, 3.0), (chat, 1.0)]


def _recipe(tmp_path, cards, **train):
    data = "  near_dedupe: {threshold: 0.7}\n  dedupe_capacity: 1000\n"
    return stream_recipe(tmp_path, cards, data=data, train={"packing": True, "packing_length": 128, **train})


def _run_dir(tmp_path, name):
    path = tmp_path / name
    path.mkdir()
    return path


@needs_cpt_extra  # the corpus recipe has near_dedupe
def test_restored_stream_continues_with_the_same_rows(corpus, tiny_tokenizer):
    tmp_path, cards = corpus
    recipe = _recipe(tmp_path, cards)
    whole = build_stream(recipe, tiny_tokenizer, _run_dir(tmp_path, "whole"))
    expected = take(whole, 100)
    whole.commit(100)

    first = build_stream(recipe, tiny_tokenizer, _run_dir(tmp_path, "resumed"))
    read = take(first, 24)  # the loader ran ahead of training ...
    assert read == expected[:24]
    first.commit(19)  # ... which trained rows up to 19 when the checkpoint was written
    assert first.state_dict()["state"]["sources"][0]["doc"] is not None, "the test should resume mid-document"
    assert first.state_dict()["state"]["packer"], "the test should resume with rows still being packed"
    folder = _run_dir(tmp_path, "checkpoint")
    save_stream_state(first, folder, 0, 1)

    again = build_stream(recipe, tiny_tokenizer, tmp_path / "resumed")
    load_stream_state(again, folder, 0, 1)
    rest = take(again, 81)
    assert rest == expected[19:100]
    again.commit(100)
    assert again.stats() == whole.stats()
    quarantine = [(tmp_path / d / "quarantine.stream.jsonl").read_text() for d in ("whole", "resumed")]
    assert quarantine[0] == quarantine[1] and len(quarantine[0].splitlines()) == 1
    counts = whole.stats()["sources"][0]
    assert counts["epochs"] >= 2, "the test should cross into another pass"
    assert counts["duplicate"] >= 1 and counts["near_duplicate"] >= 1 and set(counts["bad"]) == {"empty text"}


@needs_cpt_extra  # the corpus recipe has near_dedupe
def test_a_stream_iterated_again_starts_at_its_last_trained_row(corpus, tiny_tokenizer):
    tmp_path, cards = corpus
    stream = build_stream(_recipe(tmp_path, cards), tiny_tokenizer)
    first = take(stream, 10)
    stream.commit(4)
    assert take(stream, 6) == first[4:10]  # rows 5.. again: read ahead, never trained
    stream.commit(10)
    more = take(stream, 3)
    assert [row["stream_step"] for row in more] == [11, 12, 13]


@needs_cpt_extra  # the corpus recipe has near_dedupe
def test_worker_processes_do_not_change_the_rows(corpus, tiny_tokenizer):
    tmp_path, cards = corpus
    inline = take(build_stream(_recipe(tmp_path, cards), tiny_tokenizer), 30)
    workers = build_stream(_recipe(tmp_path, cards, dataloader_num_workers=2), tiny_tokenizer)
    assert take(workers, 30) == inline
    workers.commit(12)
    assert take(workers, 18) == inline[12:]  # restarted workers resume in step


def test_two_ranks_read_disjoint_documents_that_make_up_the_corpus(tmp_path, tiny_tokenizer, monkeypatch):
    docs = documents(25, lengths=(4, 9))
    write_shards(tmp_path / "corpus", docs, shards=4)
    card = write_stream_card(tmp_path, "corpus", "corpus/*")
    recipe = stream_recipe(tmp_path, [(card, 1.0)], train={"max_length": 512})
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        stream = build_stream(recipe, tiny_tokenizer)
        rows = take(stream, 13 if rank == 0 else 12)  # one document per row (no packing): one pass each
        texts = [tiny_tokenizer.decode(ids).removesuffix("<|endoftext|>") for ids in samples(rows)]
        seen.append(texts)
        stream.commit(rows[-1]["stream_step"])
        assert stream.sources[0].epoch == 0 and stream.stats()["sources"][0]["documents"] == len(rows)
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(docs)


@needs_cpt_extra  # the corpus recipe has near_dedupe
def test_a_checkpoint_of_another_world_size_is_refused(corpus, tiny_tokenizer):
    from qwen35_tune.errors import UserError

    tmp_path, cards = corpus
    stream = build_stream(_recipe(tmp_path, cards), tiny_tokenizer)
    take(stream, 3)
    stream.commit(3)
    folder = _run_dir(tmp_path, "checkpoint")
    save_stream_state(stream, folder, 0, 2)
    with pytest.raises(UserError, match=r"no data-stream position for rank 0 of 1 \(it holds "
                                        r"stream_state-rank0-of-2.json: resume with the same process count\)"):
        load_stream_state(stream, folder, 0, 1)
    state = json.loads((folder / "stream_state-rank0-of-2.json").read_text())
    assert state["state"]["step"] == 3


def test_collator_numbers_stream_batches_and_passes_eval_rows_through():
    """Stream rows carry their number to training_step; eval rows (a plain dataset, no number) collate as usual."""
    from qwen35_tune.train.collator import build_collator
    from qwen35_tune.train.stream_trainer import STEP_KEY, StreamCollator

    collate = StreamCollator(build_collator(0, packed=False))
    rows = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7], STEP_KEY: 3}, {"input_ids": [8], "labels": [8], STEP_KEY: 4}]
    batch = collate(rows)
    assert batch[STEP_KEY] == 4 and batch["input_ids"].shape == (2, 3)
    eval_batch = collate([{k: v for k, v in row.items() if k != STEP_KEY} for row in rows])
    assert STEP_KEY not in eval_batch and eval_batch["input_ids"].shape == (2, 3)
