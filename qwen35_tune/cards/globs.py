"""Expand a card's ``source.path`` globs safely: each file once, and never an endless search.

``glob``'s ``**`` follows symlinked folders, so a link back into the searched tree (``data/a -> .``) makes it list
the same files once per level until the OS gives up (40 levels), and two such links make the search exponential:
validate would hang. Before a ``**`` pattern is handed to ``glob``, the folders under its fixed part are counted
the way ``glob`` would walk them (a folder reached through several links counts each time); a loop, or more than
``MAX_SEARCHED_FOLDERS``, is an error naming the folder. Matches are then de-duplicated by real path, so a file
reached twice (through a link, or by two patterns) is read once.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

MAX_SEARCHED_FOLDERS = 100_000
_MAGIC = ("*", "?", "[")


def expand_patterns(patterns: list[str]) -> list[str]:
    """Every file the (absolute) patterns match, in pattern order then sorted, each real file once."""
    out: dict[str, str] = {}
    for pattern in patterns:
        for match in expand_pattern(pattern):
            out.setdefault(os.path.realpath(match), match)
    return list(out.values())


def expand_pattern(pattern: str) -> list[str]:
    """Sorted files one absolute pattern matches; ValueError when its ``**`` would search a link loop or too many
    folders."""
    if "**" in pattern:
        _check_search(_fixed_part(pattern), pattern)
    return sorted(m for m in glob.glob(pattern, recursive=True) if os.path.isfile(m))


def _fixed_part(pattern: str) -> str:
    """The folder a pattern's search starts from: its components before the first one with a wildcard."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if any(c in part for c in _MAGIC)), len(parts))
    return str(Path(*parts[:fixed])) if fixed else "."


def _check_search(top: str, pattern: str) -> None:
    """Count the folders ``glob`` would visit under ``top`` (each visit through a link counts), without visiting
    any twice: a folder inside itself is a loop, more than MAX_SEARCHED_FOLDERS is too many."""
    if not os.path.isdir(top):
        return
    visits: dict[str, int] = {}  # real folder -> folders glob visits from it, itself included
    on_path: set[str] = set()
    stack: list[tuple[str, list[str] | None]] = [(os.path.realpath(top), None)]
    while stack:
        real, children = stack[-1]
        if children is None:  # first time here: list the sub-folders glob would enter (hidden ones it skips)
            on_path.add(real)
            children = [os.path.realpath(entry.path) for entry in _subfolders(real)]
            stack[-1] = (real, children)
            for child in children:
                if child in on_path:
                    raise ValueError(f"'{pattern}': a link under {top} leads back to {child}, a folder it is in, so "
                                     "'**' would search it forever; remove the link or list the files without '**'")
                if child not in visits:
                    stack.append((child, None))
            continue
        stack.pop()
        on_path.discard(real)
        visits[real] = 1 + sum(visits[child] for child in children)
        if visits[real] > MAX_SEARCHED_FOLDERS:
            raise ValueError(f"'{pattern}': '**' would search more than {MAX_SEARCHED_FOLDERS:,} folders under {top} "
                             "(counting those reached through links); narrow the pattern")


def _subfolders(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return [entry for entry in entries if not entry.name.startswith(".") and _is_dir(entry)]
    except OSError:  # unreadable: glob skips it too
        return []


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links, as glob does
    except OSError:
        return False
