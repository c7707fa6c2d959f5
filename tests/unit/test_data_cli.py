"""`preview` and `data stats` through the CLI entry point on the tiny default recipe."""

from __future__ import annotations

import json
from pathlib import Path

from qwen35_tune.cli import main

REPO = Path(__file__).resolve().parents[2]
RECIPE = str(REPO / "recipes" / "tiny" / "sft_lora.yaml")


def test_preview_shows_rows_and_counts(capsys):
    assert main(["preview", RECIPE, "--rows", "2"]) == 0
    out = capsys.readouterr().out
    assert "tiny_chat row 1" in out and "tiny_chat row 2" in out and "tiny_chat row 3" not in out
    assert "108 tokens, 49 trained" in out  # row 1: two assistant turns, reasoning in the final one
    assert "<think>" in out and "I need 58 + 16" in out


def test_data_stats_writes_report(tmp_path, capsys):
    assert main(["data", "stats", RECIPE, "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "tiny_chat" in out and "78 train rows, 9 eval rows" in out
    stats = json.loads((tmp_path / "data_stats.json").read_text())
    card = stats["cards"][0]
    assert card["duplicate"] == 9 and card["length_percentiles"]["max"] >= card["length_percentiles"]["p50"] > 0
    assert (tmp_path / "lengths.png").stat().st_size > 1000
