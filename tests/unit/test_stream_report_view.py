"""The run report's data table shows a streaming card's counts (data_stats.json 'stream'), not only rendered cards."""

from __future__ import annotations

from qwen35_tune.report.data_view import card_rows


def test_streaming_card_has_its_line_and_counts_in_the_total():
    stats = {"cards": [{"name": "chat", "rows": 10, "kept": 10, "train": 9, "eval": 1, "tokens": 500,
                        "trained_tokens": 500}],
             "stream": {"rows": 7, "ranks": 1, "sources": [
                 {"name": "filings", "streaming": True, "tokens": 3000, "rows": 40, "documents": 30, "chunks": 35,
                  "duplicate": 2, "near_duplicate": 3, "language": 1, "length": 2, "contaminated": 1,
                  "bad": {"bad JSON": 1}},
                 {"name": "chat", "streaming": False, "tokens": 400, "rows": 8}]}}  # fmt: skip
    rows = card_rows(stats, {"filings": 9.0, "chat": 1.0})
    assert [r["name"] for r in rows] == ["chat", "filings", "total"]
    filings = rows[1]
    assert filings["weight"] == 9.0 and filings["kept"] == 30 and filings["duplicate"] == 5 and filings["bad"] == 1
    assert filings["dropped"] == 3 and filings["train"] == 35 and filings["trained_tokens"] == 3000
    assert rows[2]["tokens"] == 3500 and rows[2]["rows"] == 50
