"""Read the raw rows of a data card's source, numbering them so errors and quarantine can name row numbers.

Local jsonl/json are read line by line by hand (not through ``datasets``) because a single malformed line must
become one quarantined row, not an exception that kills the whole load. Parquet, csv and Hub datasets go
through ``datasets``.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from pathlib import Path

from qwen35_tune.data.formats import BadRow
from qwen35_tune.errors import UserError


def source_files(patterns: list[str]) -> list[Path]:
    """Expand the card's (already absolute) paths and globs, sorted for a deterministic row order."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True))
        files.extend(Path(m) for m in matches)
    return files


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict | BadRow]]:
    """(line number, row) for each non-blank line: numbers are the file's own lines, so a quarantined row can be
    found with an editor even when blank lines sit between rows. Read as bytes so one line that is not UTF-8 is a
    bad row rather than the end of the build; a byte-order mark (Windows editors write one) is ignored."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield number, BadRow(f"line is not valid UTF-8 (byte {exc.start + 1})")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, BadRow(f"bad JSON: {exc.msg} (column {exc.colno})")
                continue
            yield number, row if isinstance(row, dict) else BadRow("line is not a JSON object")


def _json_rows(path: Path) -> Iterator[tuple[int, dict | BadRow]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f":{exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise UserError(f"{path}{where}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: a .json source must hold a list of row objects")
    for number, row in enumerate(data, start=1):
        yield number, row if isinstance(row, dict) else BadRow("row is not a JSON object")


def _table_rows(path: Path) -> Iterator[tuple[int, dict | BadRow]]:
    from datasets import load_dataset

    builder = "parquet" if path.suffix == ".parquet" else "csv"
    try:
        table = load_dataset(builder, data_files=str(path), split="train")
    except Exception as exc:  # pandas / pyarrow parser errors, by case
        raise UserError(f"{path}: could not be read as {builder.upper()}: {type(exc).__name__}: {exc}") from None
    yield from enumerate(table, start=1)


def iter_rows(files: list[Path]) -> Iterator[tuple[str, int, dict | BadRow]]:
    """(file, 1-based row number, row or BadRow) for every row of every file; for .jsonl the number is the line."""
    readers = {".jsonl": _jsonl_rows, ".json": _json_rows, ".parquet": _table_rows, ".csv": _table_rows}
    for path in files:
        reader = readers.get(path.suffix)
        if reader is None:
            raise UserError(f"{path}: unsupported file type '{path.suffix}' (use .jsonl, .json, .parquet or .csv)")
        for number, row in reader(path):
            yield str(path), number, row


def iter_card_rows(card) -> Iterator[tuple[str, int, dict | BadRow]]:
    """(file or hub id, 1-based row number, row or BadRow) for every row of a data card's source."""
    if card.source_paths:
        yield from iter_rows(source_files(card.source_paths))
        return
    src = card.source
    for number, row in enumerate(_hub_rows(src), start=1):
        yield src.hub, number, row


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
