"""Read the raw rows of a data card's source, numbering them so errors and quarantine can name row numbers.

Local jsonl/json are read line by line by hand (not through ``datasets``) because a single malformed line must
become one quarantined row, not an exception that kills the whole load. Parquet, csv and Hub datasets go
through ``datasets``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path

from qwen35_tune.cards.globs import expand_patterns
from qwen35_tune.data.bad_row import BadRow
from qwen35_tune.data.row_limits import MAX_NESTING, MAX_ROW_BYTES, check_nesting
from qwen35_tune.data.text_readers import decode_row, file_kind, parse_line, read_rows
from qwen35_tune.errors import UserError


def source_files(patterns: list[str]) -> list[Path]:
    """Expand the card's (already absolute) paths and globs, sorted for a deterministic row order; a file matched
    twice (two patterns, or a link) is read once."""
    try:
        return [Path(m) for m in expand_patterns(patterns)]
    except ValueError as exc:  # a '**' over a link loop (checked at validate, unless the folder changed since)
        raise UserError(f"source.path {exc}") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict | BadRow]]:
    """(line number, row) for each non-blank line: numbers are the file's own lines, so a quarantined row can be
    found with an editor even when blank lines sit between rows. Read as bytes so one line that is not UTF-8 is a
    bad row rather than the end of the build; a byte-order mark (Windows editors write one) is ignored; a line over
    ``MAX_ROW_BYTES`` is a bad row and is skipped without being held in memory."""
    with path.open("rb") as fh:
        number = 0
        while raw := fh.readline(MAX_ROW_BYTES + 1):
            number += 1
            if len(raw) > MAX_ROW_BYTES and not raw.endswith(b"\n"):
                while (rest := fh.readline(2**20)) and not rest.endswith(b"\n"):
                    pass
                yield number, BadRow(f"line is longer than {MAX_ROW_BYTES // 2**20} MiB")
                continue
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield number, BadRow(f"line is not valid UTF-8 (byte {exc.start + 1})")
                continue
            if line.strip():
                yield number, parse_line(line)


def _json_rows(path: Path) -> Iterator[tuple[int, dict | BadRow]]:
    """Rows of a .json file holding one array of row objects, parsed one element at a time: an element nested too
    deep for the parser becomes one bad row (skipped by ``skip_json_value``) instead of failing the file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start + 1}); a .json source must be UTF-8") from None
    decoder, at, number = json.JSONDecoder(), _skip_space(text, 0), 0
    if at == len(text):  # an empty file holds no rows, as an empty .jsonl
        return
    if not text.startswith("[", at):
        raise UserError(f"{path}: a .json source must hold a list of row objects")
    at = _skip_space(text, at + 1)
    while not text.startswith("]", at):
        number += 1
        try:
            row, at = decoder.raw_decode(text, at)
            yield number, row if isinstance(row, dict) else BadRow("row is not a JSON object")
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
        except RecursionError:
            at = skip_json_value(text, at)
            yield number, BadRow(f"row is nested more than {MAX_NESTING} levels deep")
        except ValueError as exc:  # an integer of more than 4300 digits
            at = skip_json_value(text, at)
            yield number, BadRow(f"bad JSON: {exc}")
        at = _skip_space(text, at)
        if text.startswith(",", at):
            at = _skip_space(text, at + 1)
        elif not text.startswith("]", at):
            line = text.count("\n", 0, at) + 1
            raise UserError(f"{path}:{line}: not valid JSON (expected ',' or ']' after row {number})")
    if text[at + 1:].strip():
        raise UserError(f"{path}: not valid JSON (text after the closing ']')")


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def skip_json_value(text: str, at: int) -> int:
    """End of the JSON value starting at ``at`` (an array or object: past its closing bracket; a scalar: at the ',' or
    bracket after it), found by counting brackets outside strings.

    Written by hand because it is only needed where json's own parser gave up on a value (too deep, or an integer
    too long to convert), and it must not recurse itself. Unbalanced text runs to the end, and the caller's next
    step reports the file as invalid.
    """
    depth, in_string, escaped = 0, False, False
    for i in range(at, len(text)):
        char = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            if depth == 0:
                return i
            depth -= 1
            if depth == 0:
                return i + 1
        elif char == "," and depth == 0:
            return i
    return len(text)


def _csv_rows(path: Path, bool_columns: tuple[str, ...] = ()) -> Iterator[tuple[int, dict | BadRow]]:
    """(row number, row) per data row of a CSV file, every cell a string as written (CSV has no types: a number
    column is text, so "2" trains as the answer "2"). Read with Python's csv module rather than pandas, which guesses
    types (ints, floats, NaN for empty cells), and record by record, so a broken record or one that is not UTF-8 is
    one bad row. ``bool_columns`` cells spelled true/false (any case) become booleans, empty ones are left out."""
    csv.field_size_limit(MAX_ROW_BYTES)
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh, strict=True)
        header = _csv_header(path, reader)
        number = 0
        while True:
            first_line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if "end of data" in str(exc):  # an unclosed quote swallowed the rest of the file: not one row's fault
                    raise UserError(f"{path}: could not be read as CSV: the quoted field opened on line {first_line} "
                                    "is never closed") from None
                number += 1
                yield number, BadRow(f"broken CSV record ({exc}; file line {reader.line_num})")
                continue
            if not cells:
                continue
            number += 1
            yield number, _csv_row(cells, header, bool_columns)


def _csv_header(path: Path, reader) -> list[str]:
    try:
        header = next(reader, [])
    except csv.Error as exc:
        raise UserError(f"{path}: could not be read as CSV: its header line is broken ({exc})") from None
    if _has_bad_bytes(header):
        raise UserError(f"{path}: could not be read as CSV: its header line is not UTF-8")
    header = [name.strip() for name in header]
    if len(set(header)) != len(header):
        twice = next(name for name in header if header.count(name) > 1)
        raise UserError(f"{path}: could not be read as CSV: column '{twice}' appears twice in the header")
    return header


def _csv_row(cells: list[str], header: list[str], bool_columns: tuple[str, ...]) -> dict | BadRow:
    if len(cells) != len(header):
        return BadRow(f"row has {len(cells)} fields, the header has {len(header)}")
    if _has_bad_bytes(cells):
        return BadRow("row is not valid UTF-8")
    row: dict = dict(zip(header, cells, strict=True))
    for name in bool_columns:
        value = row.get(name)
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            row[name] = value.strip().lower() == "true"
        elif value is not None and not value.strip():
            del row[name]
    return row


def _has_bad_bytes(cells: list[str]) -> bool:
    """True when a cell holds bytes that were not UTF-8 (kept as lone surrogates by ``errors="surrogateescape"``)."""
    return any(_SURROGATE.search(cell) for cell in cells)


_SURROGATE = re.compile("[\udc80-\udcff]")


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict | BadRow]]:
    import pyarrow.parquet as pq
    from datasets import load_dataset

    try:
        pq.ParquetFile(path).close()  # footer and schema: a file that is not parquet fails here, before datasets logs
        table = load_dataset("parquet", data_files=str(path), split="train")
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... by case
        raise UserError(f"{path}: could not be read as PARQUET: {type(exc).__name__}: {exc}") from None
    yield from enumerate(table, start=1)


def iter_rows(files: list[Path], bool_columns: tuple[str, ...] = (), text_key: str = "text",
              sample_by: str = "document") -> Iterator[tuple[str, int, dict | BadRow]]:
    """(file, 1-based row number, row or BadRow) for every row of every file; for .jsonl the number is the line.

    ``bool_columns``: columns whose CSV cells spelled true/false are read as booleans (CSV has no types).
    ``.txt`` files give one ``{text_key: text}`` row per document (``sample_by``: the whole file, each paragraph or
    each line); ``.jsonl.gz`` / ``.txt.gz`` are read like their uncompressed kinds (``data.text_readers``).
    """
    readers = {".jsonl": _jsonl_rows, ".json": _json_rows, ".parquet": _parquet_rows,
               ".csv": lambda path: _csv_rows(path, bool_columns)}  # fmt: skip
    for path in files:
        kind = file_kind(path)
        if kind in (".jsonl.gz", ".txt", ".txt.gz"):
            for at in read_rows(path, text_key=text_key, sample_by=sample_by):
                yield str(path), at.number, _checked(decode_row(at.payload, at.number, text_key))
            continue
        reader = readers.get(kind)
        if reader is None:
            raise UserError(f"{path}: unsupported file type '{path.suffix}' (use .jsonl, .jsonl.gz, .json, .parquet, "
                            ".csv, .txt or .txt.gz)")
        for number, row in reader(path):
            yield str(path), number, _checked(row)


def iter_card_rows(card) -> Iterator[tuple[str, int, dict | BadRow]]:
    """(file or hub id, 1-based row number, row or BadRow) for every row of a data card's source."""
    if card.source_paths:
        thinking = card.columns.get("enable_thinking", "enable_thinking")
        yield from iter_rows(source_files(card.source_paths), bool_columns=(thinking,),
                             text_key=card.columns.get("text", "text"), sample_by=card.source.sample_by)
        return
    src = card.source
    for number, row in enumerate(_hub_rows(src), start=1):
        yield src.hub, number, _checked(row if isinstance(row, dict) else BadRow("row is not a mapping of columns"))


def _checked(row: dict | BadRow) -> dict | BadRow:
    """The row, or a BadRow when it nests too deep for the code after this (json, jinja2, pyarrow)."""
    if isinstance(row, BadRow):
        return row
    try:
        check_nesting(row)
    except BadRow as exc:
        return exc
    return row


def _hub_rows(src) -> Iterator[dict]:
    """Rows of a Hub dataset through ``datasets``; offline or missing, a UserError that says which and how."""
    from datasets import load_dataset

    try:
        dataset = load_dataset(
            src.hub, name=src.config, split=src.split, revision=src.revision, data_files=src.data_files,
            streaming=src.streaming,
        )
    except Exception as exc:  # datasets raises ConnectionError, DatasetNotFoundError, ValueError, ... by case
        raise UserError(
            f"Hub dataset '{src.hub}' (split '{src.split}') could not be loaded: {type(exc).__name__}: {exc}. "
            "Offline? Download it once with network access (it is then cached), or point the card's "
            "source.path at local files."
        ) from None
    yield from dataset
