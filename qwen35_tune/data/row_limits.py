"""Limits that keep a hostile or broken row away from code that would crash or hang on it.

Rows reach recursive code (``json``, jinja's ``tojson``, pyarrow, deep copies) and a renderer whose work grows with
the square of the number of turns, so a row nested thousands of levels deep, holding NaN or infinity, or made of
tens of thousands of messages is refused here, with a reason the quarantine records, before anything else sees it.
The walks are iterative: checking depth must not itself recurse.
"""

from __future__ import annotations

import math
from typing import Any

from qwen35_tune.data.bad_row import BadRow

# Real rows nest a dozen levels (a tool schema inside a tools list inside a row); a hundred leaves room for the
# deepest JSON schemas and stays far below Python's recursion limit (~1000), which json and jinja2 run into.
MAX_NESTING = 100
# One line of a .jsonl file (a CSV field likewise): room for inline base64 images, far from a memory problem.
MAX_ROW_BYTES = 64 * 2**20
# Every assistant turn renders the conversation before it (work grows with the square of the turns): 2048 messages
# (about 1000 assistant turns) render in seconds; a row of 100k messages would take a day.
MAX_MESSAGES = 2048
# Images and videos per row: each is opened and decoded when the row renders (a long list would exhaust memory
# before the row could be found too long); real rows carry a handful.
MAX_MEDIA = 256


def check_nesting(value: Any, what: str = "row") -> None:
    """BadRow when ``value`` (dicts and lists) nests deeper than ``MAX_NESTING``, or holds more than
    ``MAX_ROW_BYTES`` of strings and bytes (a parquet or Hub row has no line length to check); other objects are
    leaves."""
    stack, size = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (str, bytes)):
            size += len(item)
            if size > MAX_ROW_BYTES:
                raise BadRow(f"{what} holds more than {MAX_ROW_BYTES // 2**20} MiB of text")
            continue
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > MAX_NESTING:
            raise BadRow(f"{what} is nested more than {MAX_NESTING} levels deep")
        stack.extend((child, depth + 1) for child in children)


def check_finite(value: Any, what: str = "row") -> None:
    """BadRow for a NaN or infinite number anywhere in ``value``: JSON has no such numbers, so a row holding one
    (Python's json reads ``NaN``, ``Infinity`` and ``1e999``) would train text no JSON parser accepts."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise BadRow(f"{what} holds the number {item!r}, which JSON cannot represent")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
