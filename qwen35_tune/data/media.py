"""Find, open and check the images and videos a row names; every problem is a ``BadRow`` the quarantine records.

A row's ``images`` / ``videos`` entries are paths (relative to the card's ``media_dir``, else its folder), inline
``data:image/...;base64,`` URIs, or already-decoded images (PIL, from a Hub dataset). URLs are refused: training runs
offline and a row must not depend on a server. Videos are a file decoded with PyAV (``pip install av``, in the
``vision`` extra) or a folder of pre-extracted frames; frames are sampled at ``fps`` up to ``max_frames``.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path

from qwen35_tune.data.formats import MEDIA_COLUMNS, BadRow

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# A folder of frames has no clock of its own; its frames are taken as shot at this rate.
FRAME_FOLDER_FPS = 1.0


def resolve_row_media(row: dict, base: Path) -> dict:
    """The row with each image/video path made absolute; URLs and missing files make the row bad."""
    out = dict(row)
    for kind in MEDIA_COLUMNS:
        if kind in row:
            out[kind] = [resolve_ref(item, kind[:-1], base) for item in row[kind]]
    return out


def resolve_ref(item, kind: str, base: Path):
    """One entry: decoded images and ``data:`` URIs pass through, paths become absolute and must exist; a video is a
    path (a file or a folder of frames) and nothing else."""
    if not isinstance(item, str):
        if kind == "video":
            raise BadRow(f"video entry of type {type(item).__name__} is not a path to a video file or frame folder")
        return item
    if item.startswith("data:"):
        return item
    if "://" in item:
        raise BadRow(f"{kind} '{item[:80]}' is a URL; training runs offline: download it and give the local path")
    path = Path(item).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.exists() or (kind == "image" and not path.is_file()):
        raise BadRow(f"missing {kind} '{item}' (looked for {path})")
    return str(path)


def open_image(ref):
    """An RGB PIL image from a path, a ``data:`` URI or a PIL image; unreadable or truncated files make the row bad."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(ref, Image.Image):
        return ref.convert("RGB")
    if isinstance(ref, dict) and ref.get("bytes"):  # Hub datasets' Image feature, undecoded
        ref = io.BytesIO(ref["bytes"])
    elif isinstance(ref, str) and ref.startswith("data:"):
        ref = io.BytesIO(_decode_data_uri(ref))
    elif not isinstance(ref, str):
        raise BadRow(f"image entry of type {type(ref).__name__} is neither a path nor an image")
    name = ref if isinstance(ref, str) else "inline image"
    try:
        with Image.open(ref) as probe:  # verify() reads the whole file but leaves the image unusable: open twice
            probe.verify()
        if isinstance(ref, io.BytesIO):
            ref.seek(0)
        with Image.open(ref) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadRow(f"unreadable image '{Path(name).name if isinstance(ref, str) else name}': {exc}") from None


def _decode_data_uri(uri: str) -> bytes:
    head, _, payload = uri.partition(",")
    if not head.startswith("data:image/") or not head.endswith(";base64"):
        raise BadRow("inline image must be a 'data:image/<type>;base64,...' URI")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise BadRow("inline image: invalid base64 data") from None


@dataclass(frozen=True)
class Video:
    """Sampled frames (T, H, W, 3 uint8 array) with the source fps and which source frames they are."""

    frames: object
    fps: float
    indices: tuple[int, ...]
    total_frames: int


def sample_indices(total: int, source_fps: float, fps: float, max_frames: int) -> list[int]:
    """Evenly spaced frame indices at ``fps`` (at least 2, at most ``max_frames``; even, for 2-frame patches)."""
    duration = total / max(source_fps, 1e-6)
    want = max(2, min(max_frames, total, round(duration * fps)))
    want -= want % 2 if want > 2 else 0
    step = total / want
    return sorted({min(total - 1, int(i * step)) for i in range(want)})


def open_video(ref: str, fps: float, max_frames: int) -> Video:
    """Decode and sample a video file (PyAV) or a folder of frame images, sorted by name."""
    import numpy as np

    path = Path(ref)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise BadRow(f"video frame folder '{path.name}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
        indices = sample_indices(len(files), FRAME_FOLDER_FPS, fps, max_frames)
        frames = [np.asarray(open_image(str(files[i]))) for i in indices]
        if len({f.shape for f in frames}) > 1:
            raise BadRow(f"video frame folder '{path.name}': frames differ in size")
        return Video(np.stack(frames), FRAME_FOLDER_FPS, tuple(indices), len(files))
    try:
        import av
    except ImportError:
        raise BadRow("no video decoder installed: pip install av (or qwen35-tune[vision]), or give a folder of "
                     "pre-extracted frames") from None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            source_fps = float(stream.average_rate or FRAME_FOLDER_FPS)
            decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except (av.FFmpegError, IndexError, OSError) as exc:
        raise BadRow(f"unreadable video '{path.name}': {exc}") from None
    if not decoded:
        raise BadRow(f"video '{path.name}' has no frames")
    indices = sample_indices(len(decoded), source_fps, fps, max_frames)
    return Video(np.stack([decoded[i] for i in indices]), source_fps, tuple(indices), len(decoded))


def media_key(row: dict) -> str:
    """A stable text key for a row's media (paths as given, inline and decoded media by content hash), for dedupe."""
    import hashlib

    def one(item) -> str:
        if isinstance(item, str) and not item.startswith("data:"):
            return item
        if isinstance(item, str):
            data = item.encode()
        elif isinstance(item, dict) and item.get("bytes"):
            data = item["bytes"]
        else:
            data = item.tobytes() if hasattr(item, "tobytes") else repr(item).encode()
        return hashlib.blake2b(data, digest_size=16).hexdigest()

    return "|".join(f"{kind}:{one(item)}" for kind in MEDIA_COLUMNS for item in row.get(kind) or [])
