"""Read the raw rows of a data card's source, numbering them so errors and quarantine can name row numbers.

Local jsonl/json are read line by line by hand (not through ``datasets``) because a single malformed line must
become one quarantined row, not an exception that kills the whole load. Parquet and csv go through ``datasets``.
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


def _jsonl_rows(path: Path) -> Iterator[dict | BadRow]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield BadRow(f"bad JSON: {exc.msg} (column {exc.colno})")
                continue
            yield row if isinstance(row, dict) else BadRow("line is not a JSON object")


def _json_rows(path: Path) -> Iterator[dict | BadRow]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: a .json source must hold a list of row objects")
    for row in data:
        yield row if isinstance(row, dict) else BadRow("row is not a JSON object")


def _table_rows(path: Path) -> Iterator[dict | BadRow]:
    from datasets import load_dataset

    builder = "parquet" if path.suffix == ".parquet" else "csv"
    yield from load_dataset(builder, data_files=str(path), split="train")


def iter_rows(files: list[Path]) -> Iterator[tuple[str, int, dict | BadRow]]:
    """(file, 1-based row number, row or BadRow) for every row of every file."""
    readers = {".jsonl": _jsonl_rows, ".json": _json_rows, ".parquet": _table_rows, ".csv": _table_rows}
    for path in files:
        reader = readers.get(path.suffix)
        if reader is None:
            raise UserError(f"{path}: unsupported file type '{path.suffix}' (use .jsonl, .json, .parquet or .csv)")
        for number, row in enumerate(reader(path), start=1):
            yield str(path), number, row
