"""Reading card files: quarantined rows carry the file's own line numbers, and files as editors and exporters really
write them (blank lines, a byte-order mark, one line in another encoding, a broken CSV) lose only what is bad."""

from __future__ import annotations

import json

import pytest

from qwen35_tune.data.formats import BadRow
from qwen35_tune.data.sources import iter_rows
from qwen35_tune.errors import UserError


def _row(q: str) -> bytes:
    return json.dumps({"prompt": q, "completion": "ok"}).encode() + b"\n"


def test_jsonl_line_numbers_bom_blank_lines_and_a_latin1_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _row("first") + b"\n\n" + _row("fourth") + b'{"prompt": "caf\xe9"}\n'
                     + b"[1, 2]\n" + _row("seventh"))
    got = [(number, row if isinstance(row, dict) else str(row)) for _, number, row in iter_rows([path])]
    assert got == [
        (1, {"prompt": "first", "completion": "ok"}),  # the byte-order mark is not part of the row
        (4, {"prompt": "fourth", "completion": "ok"}),  # numbers are lines: the two blank ones still count
        (5, "line is not valid UTF-8 (byte 16)"),
        (6, "line is not a JSON object"),
        (7, {"prompt": "seventh", "completion": "ok"}),
    ]
    assert all(isinstance(row, (dict, BadRow)) for _, _, row in iter_rows([path]))


def test_a_csv_that_cannot_be_parsed_names_the_file(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text('prompt,completion\n"unterminated,ok\n')
    with pytest.raises(UserError, match=r"broken\.csv: could not be read as CSV"):
        list(iter_rows([path]))
