"""Rows of one source file from a position: the readers behind streaming cards (and ``.txt`` / ``.gz`` sources).

Each reader starts at an ``offset`` (a byte offset for ``.jsonl``/``.txt``, in the decompressed stream for ``.gz``;
a row index for ``.parquet``) and yields ``RowAt``: the row's number in its file (its line for ``.jsonl``/``.txt``),
where the next row starts, and the row's payload, decoded lazily by ``decode_row`` so that a reader that only skips
rows (another data-parallel rank's documents) does not parse them. A resumed stream reopens its file at the saved
offset instead of reading it again from the top (``.gz`` files decompress up to it: gzip has no index).

Written by hand rather than through ``datasets``' streaming readers because those neither resume at an offset nor
turn one broken line, a truncated gzip or a non-UTF-8 paragraph into a quarantined row naming file and line.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qwen35_tune.data.bad_row import BadRow
from qwen35_tune.data.row_limits import MAX_NESTING, MAX_ROW_BYTES
from qwen35_tune.errors import UserError

# Longest first: '.jsonl.gz' must win over '.gz'.
STREAM_SUFFIXES = (".jsonl.gz", ".txt.gz", ".jsonl", ".parquet", ".txt")
_GZIP_ERRORS = (EOFError, OSError, zlib.error)  # truncated stream; BadGzipFile (an OSError); corrupt deflate data


def file_kind(path: str | Path) -> str:
    """The suffix that decides how a file is read ('.jsonl.gz', '.txt', ...); '' for an unknown kind."""
    name = str(path)
    return next((suffix for suffix in (*STREAM_SUFFIXES, ".json", ".csv") if name.endswith(suffix)), "")


@dataclass(frozen=True)
class RowAt:
    """One row of a file: its 1-based number (line for .jsonl/.txt), where the next row starts, and its payload
    (bytes of a JSON line, a text, a parquet row, or the BadRow saying why there is none)."""

    number: int
    next_offset: int
    payload: bytes | str | dict | BadRow


def read_rows(path: Path, offset: int = 0, number: int = 0, *, text_key: str = "text",
              sample_by: str = "document", columns: list[str] | None = None) -> Iterator[RowAt]:
    """Rows of ``path`` from ``offset`` (the ``number`` of rows before it); see the module docstring.

    ``text_key`` names the column a ``.txt`` document is given (the card's text column); ``columns`` limits what a
    parquet reader loads (None = every column)."""
    kind = file_kind(path)
    if kind in (".jsonl", ".jsonl.gz"):
        yield from _guarded(path, _jsonl(path, offset, number), number)
    elif kind in (".txt", ".txt.gz"):
        yield from _guarded(path, _text(path, offset, number, text_key, sample_by), number)
    elif kind == ".parquet":
        yield from _parquet(path, offset, columns)
    else:
        raise UserError(f"{path}: a streaming card reads {', '.join(STREAM_SUFFIXES)} files, not '{Path(path).name}'")


def decode_row(payload: bytes | str | dict | BadRow, number: int, text_key: str = "text") -> dict | BadRow:
    """The row object of a payload: a JSON line parsed, a text wrapped as ``{text_key: text}``."""
    if isinstance(payload, (dict, BadRow)):
        return payload
    if isinstance(payload, str):
        return {text_key: payload}
    try:
        line = payload.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        return BadRow(f"line is not valid UTF-8 (byte {exc.start + 1})")
    return parse_line(line)


def parse_line(line: str) -> dict | BadRow:
    """One JSONL line as a row object, or the BadRow saying why it is not one."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return BadRow(f"bad JSON: {exc.msg} (column {exc.colno})")
    except RecursionError:  # json's parser recurses once per level: a 100k-deep line ends it
        return BadRow(f"row is nested more than {MAX_NESTING} levels deep")
    except ValueError as exc:  # an integer of more than 4300 digits (Python's limit on converting them)
        return BadRow(f"bad JSON: {exc}")
    return row if isinstance(row, dict) else BadRow("line is not a JSON object")


def _open(path: Path):
    return gzip.open(path, "rb") if str(path).endswith(".gz") else path.open("rb")


def _guarded(path: Path, rows: Iterator[RowAt], number: int) -> Iterator[RowAt]:
    """``rows``, ending in one BadRow when the gzip stream under them is truncated or corrupt: the rows before it
    were read, the rest of the file cannot be (so it is said, with the last line reached, not skipped silently)."""
    last = number
    try:
        for row in rows:
            last = row.number
            yield row
    except _GZIP_ERRORS as exc:
        if not str(path).endswith(".gz"):
            raise UserError(f"{path}: could not be read: {exc}") from None
        yield RowAt(last + 1, -1, BadRow(f"gzip data is truncated or corrupt after line {last} ({exc}); the rest of "
                                         "this file could not be read"))


def _jsonl(path: Path, offset: int, number: int) -> Iterator[RowAt]:
    """Non-blank lines as bytes; a line over MAX_ROW_BYTES is a BadRow, skipped without being held in memory."""
    with _open(path) as fh:
        fh.seek(offset)
        while raw := fh.readline(MAX_ROW_BYTES + 1):
            number += 1
            offset += len(raw)
            if len(raw) > MAX_ROW_BYTES and not raw.endswith(b"\n"):
                while (rest := fh.readline(2**20)) and not rest.endswith(b"\n"):
                    offset += len(rest)
                offset += len(rest)
                yield RowAt(number, offset, BadRow(f"line is longer than {MAX_ROW_BYTES // 2**20} MiB"))
            elif raw.strip():
                yield RowAt(number, offset, raw)


def _text(path: Path, offset: int, number: int, text_key: str, sample_by: str) -> Iterator[RowAt]:
    """Documents of a .txt file: the whole file, each blank-line-separated paragraph, or each non-blank line."""
    if sample_by == "document":
        if offset:  # the one document was read already
            return
        with _open(path) as fh:
            data = fh.read(MAX_ROW_BYTES + 1)
        if len(data) > MAX_ROW_BYTES:
            yield RowAt(1, 1, BadRow(f"document is larger than {MAX_ROW_BYTES // 2**20} MiB; cut the file into "
                                     "smaller documents or set the card's source.sample_by: paragraph"))
        elif data.strip():
            yield RowAt(1, 1, _decoded(data, 1, 1))
        return
    with _open(path) as fh:
        fh.seek(offset)
        lines: list[bytes] = []
        first = size = 0
        while raw := fh.readline(MAX_ROW_BYTES + 1):
            number += 1
            offset += len(raw)
            if len(raw) > MAX_ROW_BYTES and not raw.endswith(b"\n"):  # skip the rest of a too-long line unread
                while (rest := fh.readline(2**20)) and not rest.endswith(b"\n"):
                    offset += len(rest)
                offset += len(rest)
            if raw.strip():
                first = first or number
                size += len(raw)
                if size <= MAX_ROW_BYTES:
                    lines.append(raw)
                if sample_by == "paragraph":
                    continue
            if size:  # a line document ends with its line, a paragraph at a blank line
                yield RowAt(first, offset, _paragraph(lines, size, first))
                lines, first, size = [], 0, 0
        if size:
            yield RowAt(first, offset, _paragraph(lines, size, first))


def _paragraph(lines: list[bytes], size: int, first: int) -> str | BadRow:
    if size > MAX_ROW_BYTES:
        return BadRow(f"document is longer than {MAX_ROW_BYTES // 2**20} MiB")
    return _decoded(b"".join(lines), first, first)


def _decoded(data: bytes, first: int, number: int) -> str | BadRow:
    try:
        text = data.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        line = first + data.count(b"\n", 0, exc.start)
        return BadRow(f"line {line} is not valid UTF-8 (byte {exc.start + 1} of the document)")
    return text.rstrip("\r\n")


def _parquet(path: Path, offset: int, columns: list[str] | None) -> Iterator[RowAt]:
    """Rows from row ``offset`` on, one record batch at a time (never the whole file), only ``columns``."""
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
        missing = [c for c in columns or () if c not in handle.schema_arrow.names]
        if missing:
            raise UserError(parquet_column_problem(path, missing[0], handle.schema_arrow.names))
        starts, total = [], 0
        for group in range(handle.num_row_groups):
            starts.append(total)
            total += handle.metadata.row_group(group).num_rows
        group = max((g for g, start in enumerate(starts) if start <= offset), default=0)
        index = starts[group] if starts else 0
        for batch in handle.iter_batches(batch_size=1024, row_groups=range(group, len(starts)), columns=columns):
            for row in batch.to_pylist():
                index += 1
                if index > offset:
                    yield RowAt(index, index, row)
    except UserError:
        raise
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... by case
        raise UserError(f"{path}: could not be read as PARQUET: {type(exc).__name__}: {exc}") from None


def parquet_column_problem(path, column: str, names: list[str]) -> str:
    """The error for a parquet file without the column a text card reads (named, with the file's columns)."""
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return (f"{path}: has no column '{column}' (its columns: {shown}); name the text column in the card: "
            f"columns: {{text: NAME}}")


def check_parquet_columns(files: list[Path], column: str) -> None:
    """UserError naming the first parquet file without ``column`` (footers only: cheap, before any row is read)."""
    import pyarrow.parquet as pq

    for path in files:
        if file_kind(path) != ".parquet":
            continue
        try:
            names = pq.read_schema(path).names
        except Exception as exc:
            raise UserError(f"{path}: could not be read as PARQUET: {type(exc).__name__}: {exc}") from None
        if column not in names:
            raise UserError(parquet_column_problem(path, column, names))
