"""Reading text corpora from a position: every kind of shard resumes at any row's offset with exactly the rows after
it, and broken input (a truncated gzip, a parquet without the text column, a shard that is not UTF-8, a glob that
matches nothing) is a quarantined row or a clear error naming the file, never a traceback, never a silent skip."""

from __future__ import annotations

import gzip
import json

import pytest

from qwen35_tune.data.bad_row import BadRow
from qwen35_tune.data.text_readers import decode_row, read_rows
from qwen35_tune.errors import UserError
from tests.unit.stream_kit import build_stream, documents, stream_recipe, take, write_shards, write_stream_card


def _rows(path, offset=0, number=0, **kwargs):
    return [(r.number, r.next_offset, decode_row(r.payload, r.number)) for r in read_rows(path, offset, number,
                                                                                        **kwargs)]


@pytest.mark.parametrize("kind", [".jsonl", ".jsonl.gz", ".txt", ".parquet"])
def test_every_offset_resumes_with_exactly_the_rest(tmp_path, kind):
    docs = documents(11, lengths=(3, 8))
    [path] = write_shards(tmp_path, docs, shards=1, kind=kind)
    rows = _rows(path, sample_by="line")
    assert [r[2]["text"] for r in rows] == docs
    for i, (number, offset, _) in enumerate(rows):
        rest = _rows(path, offset, number, sample_by="line")
        assert [r[2]["text"] for r in rest] == docs[i + 1 :]
        assert [r[0] for r in rest] == [r[0] for r in rows[i + 1 :]]  # row numbers continue (file lines)


def test_txt_documents_paragraphs_and_lines(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeffTitle line\nsecond line\n\n\n  \nNext paragraph\r\n\nlast".encode())
    assert [r[2]["text"] for r in _rows(path, sample_by="document")] == [
        "Title line\nsecond line\n\n\n  \nNext paragraph\r\n\nlast"]
    paragraphs = _rows(path, sample_by="paragraph")
    assert [(r[0], r[2]["text"]) for r in paragraphs] == [(1, "Title line\nsecond line"), (6, "Next paragraph"),
                                                           (8, "last")]
    assert [(r[0], r[2]["text"]) for r in _rows(path, sample_by="line")] == [
        (1, "Title line"), (2, "second line"), (6, "Next paragraph"), (8, "last")]
    # a paragraph resumed from its offset
    assert [r[2]["text"] for r in _rows(path, paragraphs[0][1], paragraphs[0][0], sample_by="paragraph")] == [
        "Next paragraph", "last"]


def test_non_utf8_paragraph_is_one_bad_row_naming_its_line(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"good one\n\nbad \xff here\nstill bad\n\ngood two\n")
    rows = _rows(path, sample_by="paragraph")
    assert rows[0][2] == {"text": "good one"} and rows[2][2] == {"text": "good two"}
    assert isinstance(rows[1][2], BadRow) and "line 3 is not valid UTF-8" in str(rows[1][2])


def test_truncated_gzip_keeps_the_rows_before_and_says_where_it_ends(tmp_path):
    docs = documents(40, lengths=(30,))
    [path] = write_shards(tmp_path, docs, shards=1, kind=".jsonl.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    rows = _rows(path)
    *good, last = rows
    assert [r[2]["text"] for r in good] == docs[: len(good)] and 0 < len(good) < len(docs)
    assert isinstance(last[2], BadRow) and last[1] == -1
    assert f"gzip data is truncated or corrupt after line {len(good)}" in str(last[2])


def test_not_gzip_at_all_is_a_bad_row(tmp_path):
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(b'{"text": "not compressed"}\n')
    [(number, _, row)] = _rows(path)
    assert number == 1 and isinstance(row, BadRow) and "gzip data is truncated or corrupt" in str(row)


def test_parquet_without_the_text_column_is_an_error_naming_file_and_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"body": ["x"], "id": [1]}), path)
    with pytest.raises(UserError, match=r"a\.parquet: has no column 'text' \(its columns: body, id\); name the text"):
        list(read_rows(path, columns=["text"]))


def test_streaming_card_with_broken_shards_quarantines_and_counts_every_row(tmp_path, tiny_tokenizer):
    """One run over a good shard, a truncated gzip and a non-UTF-8 line: the bad rows are in quarantine with their
    file and line, and rows = good + bad (nothing vanished)."""
    corpus = tmp_path / "corpus"
    docs = documents(30, lengths=(20,))
    write_shards(corpus, docs[:10], shards=1, kind=".jsonl")
    cut = corpus / "part-cut.jsonl.gz"
    data = gzip.compress("".join(json.dumps({"text": d}) + "\n" for d in docs[10:20]).encode(), mtime=0)
    cut.write_bytes(data[: len(data) // 2])
    bad = corpus / "part-bad.jsonl"
    bad.write_bytes(b'{"text": "fine row here"}\n{"text": "broken \xff"}\n{"text": "also fine"}\n')
    card = write_stream_card(tmp_path, "corpus", "corpus/*", max_bad_fraction=0.5)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    recipe = stream_recipe(tmp_path, [(card, 1.0)], data="  dedupe: false\n")
    stream = build_stream(recipe, tiny_tokenizer, run_dir)
    rows = take(stream, 200)
    stream.commit(rows[-1]["stream_step"])
    counts = stream.stats()["sources"][0]
    lines = [json.loads(line) for line in (run_dir / "quarantine.stream.jsonl").read_text().splitlines()]
    reasons = {(line["file"].rsplit("/", 1)[1], line["row"]): line["reason"] for line in lines}
    assert reasons[("part-bad.jsonl", 2)] == "line is not valid UTF-8 (byte 18)"
    [(cut_row, cut_reason)] = [(row, r) for (name, row), r in reasons.items() if name == "part-cut.jsonl.gz"]
    assert cut_reason.startswith(f"gzip data is truncated or corrupt after line {cut_row - 1}")
    assert counts["rows"] >= counts["documents"] + sum(counts["bad"].values())
    first_pass = 10 + (cut_row - 1) + 2  # good rows of the three files
    assert counts["documents"] >= first_pass and len(lines) == 2  # quarantined once (the first pass), not per pass


def test_too_many_bad_rows_stop_the_run_naming_the_quarantine(tmp_path, tiny_tokenizer):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_bytes(b'{"text": "ok"}\n' + b'{"text": "\xff"}\n' * 3)
    card = write_stream_card(tmp_path, "corpus", "corpus/*.jsonl")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stream = build_stream(stream_recipe(tmp_path, [(card, 1.0)]), tiny_tokenizer, run_dir)
    with pytest.raises(UserError, match=r"data card 'corpus': 3 of the first 4 rows read are bad \(75.0%\), more than "
                                        r"its max_bad_fraction 5.0%\. The rows, with file, row number and reason, are "
                                        r"in .*quarantine\.stream\.jsonl"):
        take(stream, 5)
    assert len((run_dir / "quarantine.stream.jsonl").read_text().splitlines()) == 3


def test_empty_glob_is_refused_at_validate_and_at_run(tmp_path, tiny_tokenizer):
    from qwen35_tune.cards import load_card
    from qwen35_tune.recipe.load import RecipeError

    corpus = tmp_path / "corpus"
    write_shards(corpus, documents(3), shards=1)
    card = write_stream_card(tmp_path, "corpus", "corpus/*.jsonl.gz")
    recipe = stream_recipe(tmp_path, [(card, 1.0)])
    (corpus / "part-000.jsonl.gz").unlink()  # the files went away between validate and the run
    with pytest.raises(UserError, match=r"card 'corpus': source.path matches no file now \(.*corpus/\*\.jsonl\.gz"):
        build_stream(recipe, tiny_tokenizer)
    with pytest.raises(RecipeError, match=r"source.path: no file matches \(looked for .*corpus/\*\.jsonl\.gz\)"):
        load_card(card)


def test_parquet_without_text_column_fails_before_training(tmp_path, tiny_tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = tmp_path / "corpus"
    write_shards(corpus, documents(4), shards=1, kind=".parquet")
    pq.write_table(pa.table({"content": ["x"]}), corpus / "part-999.parquet")
    card = write_stream_card(tmp_path, "corpus", "corpus/*.parquet")
    with pytest.raises(UserError, match=r"part-999\.parquet: has no column 'text' \(its columns: content\)"):
        build_stream(stream_recipe(tmp_path, [(card, 1.0)]), tiny_tokenizer)
