"""Streaming cards through the CLI entry point: `data stats` counts a bounded sample and says so, and broken shards
(a truncated gzip, a line that is not UTF-8, a parquet without the text column, a glob that matches nothing) end in
quarantine lines naming file and line, or exit 2 with a message naming the file: never a traceback."""

from __future__ import annotations

import gzip
import json

import pytest

from qwen35_tune.cli import main
from tests.unit.stream_kit import documents, write_shards, write_stream_card


def _recipe(tmp_path, card) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"name: t\nmodel: {{name_or_path: 'tiny://dense'}}\ntrain: {{max_length: 64, max_steps: 5}}\n"
                    f"data:\n  cards: [{{path: '{card}'}}]\n")
    return str(path)


def _stats(tmp_path, capsys, card) -> tuple[int, str]:
    """Exit code of `data stats` on a recipe over ``card``, and everything it printed."""
    code = main(["data", "stats", _recipe(tmp_path, card), "--output-dir", str(tmp_path / "out")])
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


def test_data_stats_counts_a_bounded_sample_of_a_streaming_card_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("qwen35_tune.data.stream_report.SAMPLE_DOCUMENTS", 100)  # 1,000 in use; smaller is faster
    write_shards(tmp_path / "corpus", documents(300, lengths=(4, 9)), shards=2, kind=".jsonl")
    code, out = _stats(tmp_path, capsys, write_stream_card(tmp_path, "corpus", "corpus/*.jsonl"))
    assert code == 0, out
    assert "a sample of up to 100 documents each, not the whole corpus" in out
    assert "streaming cards are counted on a sample (corpus: 10" in out and "(the whole card)" not in out
    sample = json.loads((tmp_path / "out" / "data_stats.json").read_text())["stream_sample"]
    assert sample["sampled"] is True and sample["whole_pass"] == {"corpus": False}
    assert 100 <= sample["documents_read"]["corpus"] < 300  # stopped at the bound, not at the end of the corpus
    [source] = sample["sources"]
    assert source["documents"] == sample["documents_read"]["corpus"] and source["tokens"] > 0


def _broken_shards(tmp_path, which: str):
    """A card over 40 good rows plus one broken shard of the kind ``which``; the broken file's name."""
    corpus = tmp_path / "corpus"
    write_shards(corpus, documents(40, lengths=(6,)), shards=1, kind=".jsonl.gz")
    if which == "truncated gzip":
        data = gzip.compress("".join(json.dumps({"text": d}) + "\n" for d in documents(20, seed=1)).encode(), mtime=0)
        (corpus / "part-cut.jsonl.gz").write_bytes(data[: len(data) // 2])
        return "part-cut.jsonl.gz", "gzip data is truncated or corrupt after line"
    (corpus / "part-bad.jsonl.gz").write_bytes(gzip.compress(b'{"text": "fine row"}\n{"text": "broken \xff"}\n'))
    return "part-bad.jsonl.gz", "line is not valid UTF-8"


@pytest.mark.parametrize("which", ["truncated gzip", "not UTF-8"])
def test_broken_shard_is_quarantined_naming_file_and_row(tmp_path, capsys, which):
    name, reason = _broken_shards(tmp_path, which)
    code, out = _stats(tmp_path, capsys, write_stream_card(tmp_path, "corpus", "corpus/*", max_bad_fraction=0.5))
    assert code == 0, out
    assert "Traceback" not in out
    lines = [json.loads(line) for line in (tmp_path / "out" / "quarantine.stream.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["file"].endswith(name) and lines[0]["reason"].startswith(reason)
    assert lines[0]["row"] >= 1 and lines[0]["card"] == "corpus"


@pytest.mark.parametrize("which", ["truncated gzip", "not UTF-8"])
def test_broken_shard_past_max_bad_fraction_exits_2_pointing_at_the_quarantine(tmp_path, capsys, which):
    name, _ = _broken_shards(tmp_path, which)
    code, out = _stats(tmp_path, capsys, write_stream_card(tmp_path, "corpus", "corpus/*", max_bad_fraction=0.0))
    assert code == 2, out
    assert "Traceback" not in out and "data card 'corpus': 1 of the first" in out
    quarantine = tmp_path / "out" / "quarantine.stream.jsonl"
    assert f"are in {quarantine}" in out and name in quarantine.read_text()


def test_parquet_without_the_text_column_exits_2_naming_the_file(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_shards(tmp_path / "corpus", documents(4), shards=1, kind=".parquet")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "corpus" / "part-999.parquet")
    code, out = _stats(tmp_path, capsys, write_stream_card(tmp_path, "corpus", "corpus/*.parquet"))
    assert code == 2 and "Traceback" not in out
    assert "part-999.parquet: has no column 'text' (its columns: body)" in out


def test_empty_glob_exits_2_naming_the_pattern(tmp_path, capsys):
    (tmp_path / "corpus").mkdir()
    code, out = _stats(tmp_path, capsys, write_stream_card(tmp_path, "corpus", "corpus/*.jsonl.gz"))
    assert code == 2 and "Traceback" not in out
    assert "source.path: no file matches" in out and "corpus/*.jsonl.gz" in out
