"""Turn the image/video paths a row names into real paths inside the card's media folders, or a BadRow saying why not.

A card's rows can number millions and nobody reads them, so they must not be able to reach files the card's YAML
does not point at: a path is resolved to its real location (``~``, ``..`` and symlinks followed) and must lie inside
one of the card's media folders (``media_dir``, else the card's folder, plus any ``media_roots``). Otherwise a card
received from someone else could train ``/etc/passwd`` or ``~/.ssh`` into weights that are then published.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from qwen35_tune.cards.schema import too_broad
from qwen35_tune.data.formats import MEDIA_COLUMNS, BadRow

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _inside(real: str, folders: Sequence[str]) -> bool:
    return any(os.path.commonpath([real, folder]) == folder for folder in folders)


def media_folders(base: Path, roots: Sequence[str | Path] = ()) -> list[str]:
    """Real paths of the folders a row's media may come from: ``base`` (media_dir or the card's folder) and
    ``roots`` (the card's media_roots)."""
    return list(dict.fromkeys(os.path.realpath(folder) for folder in (base, *roots)))


def resolve_row_media(row: dict, base: Path, roots: Sequence[str | Path] = ()) -> dict:
    """The row with each image/video path made real and checked; URLs, missing files and files outside the card's
    media folders make the row bad."""
    out = dict(row)
    for kind in MEDIA_COLUMNS:
        if kind in row:
            out[kind] = [resolve_ref(item, kind[:-1], base, roots) for item in row[kind]]
    return out


def resolve_ref(item, kind: str, base: Path, roots: Sequence[str | Path] = ()):
    """One entry: decoded images and ``data:image`` URIs pass through; a path becomes its real path, which must
    exist and lie inside ``media_folders(base, roots)``. A video is a path (a file or a folder of frames) and
    nothing else."""
    if not isinstance(item, str):
        if kind == "video":
            raise BadRow(f"video entry of type {type(item).__name__} is not a path to a video file or frame folder")
        return item
    if item.startswith("data:"):
        if kind == "video":
            raise BadRow("a video must be a file or a folder of frames, not a data: URI")
        return item
    if "://" in item:
        raise BadRow(f"{kind} '{item[:80]}' is a URL; training runs offline: download it and give the local path")
    if "\x00" in item:
        raise BadRow(f"{kind} path holds a NUL character")
    path = Path(item).expanduser()
    path = path if path.is_absolute() else base / path
    folders = media_folders(base, roots)
    real = os.path.realpath(path)
    _check_inside(real, item, kind, folders, base, roots)  # before the existence check: nothing outside is probed
    if not os.path.exists(real):
        raise BadRow(f"missing {kind} '{item}' (looked for {path})")
    if not (os.path.isfile(real) or (kind == "video" and os.path.isdir(real))):  # a fifo or device would block
        what = "a file" if kind == "image" else "a file or a folder of frames"
        raise BadRow(f"{kind} '{item}' is not {what}")
    if kind == "video" and os.path.isdir(real):
        _check_frames_inside(real, item, folders, base, roots)
    return real


def _check_inside(real: str, item: str, kind: str, folders: list[str], base: Path, roots) -> None:
    broad = [folder for folder in folders if too_broad(folder)]
    if broad:
        raise BadRow(f"the card's media folder {broad[0]} is the file system root or holds your home folder, so its "
                     "rows could name any of your files; set the card's media_dir to the folder holding its media")
    if not _inside(real, folders):
        names = ", ".join(str(f) for f in (base, *roots))
        raise BadRow(f"{kind} '{item[:200]}' is outside the card's media folders ({names}); a row may only name "
                     "media inside them: list its folder under the card's media_roots to allow it")


def _check_frames_inside(folder: str, item: str, folders: list[str], base: Path, roots) -> None:
    """Every frame image of a frame folder must be inside the media folders too (a frame may be a symlink)."""
    for entry in os.scandir(folder):
        if entry.name.lower().endswith(IMAGE_SUFFIXES) and not _inside(os.path.realpath(entry.path), folders):
            names = ", ".join(str(f) for f in (base, *roots))
            raise BadRow(f"video frame folder '{item[:200]}': frame '{entry.name}' links outside the card's media "
                         f"folders ({names})")
