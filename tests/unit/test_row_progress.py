"""The card-reading counter passes rows through unchanged and keeps logs clean when stderr is not a terminal."""

from __future__ import annotations

from qwen35_tune.data.row_progress import counted


def test_rows_unchanged_and_silent_off_terminal(capsys):
    rows = [{"i": i} for i in range(2500)]
    assert list(counted(iter(rows), "card")) == rows
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
