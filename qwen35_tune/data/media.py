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
import warnings
from dataclasses import dataclass
from pathlib import Path

from qwen35_tune.data.formats import MEDIA_COLUMNS, BadRow
from qwen35_tune.data.media_paths import IMAGE_SUFFIXES, resolve_ref, resolve_row_media

__all__ = ["IMAGE_SUFFIXES", "open_image", "open_video", "resolve_ref", "resolve_row_media", "source_pixel_limit"]

# A folder of frames has no clock of its own; its frames are taken as shot at this rate.
FRAME_FOLDER_FPS = 1.0
# Decoders we let Pillow use: the formats of IMAGE_SUFFIXES. Others (EPS runs Ghostscript) are refused.
IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "BMP", "GIF", "TIFF")
# ffmpeg demuxers for video files, and only local files: playlists (HLS) and concat lists would open other files.
VIDEO_OPTIONS = {"format_whitelist": "mov,mp4,matroska,webm,avi,mpeg,mpegts,flv,ogg,asf,gif",
                 "protocol_whitelist": "file"}
# A source image (or video frame) may hold this many times model.vision.max_pixels (the processor downscales it),
# but never needs fewer than 4096x4096 (a phone photo); past that, decoding alone costs more memory than training.
SOURCE_PIXEL_FACTOR = 64
MIN_SOURCE_PIXELS = 4096 * 4096
MAX_INLINE_IMAGE_BYTES = 32 * 2**20
MAX_VIDEO_FRAMES = 100_000  # about an hour at 30 fps: all of it is decoded, even though few frames are kept


def source_pixel_limit(max_pixels: int | None) -> int:
    """Most pixels a source image or frame may have, from ``model.vision.max_pixels`` (None: its default)."""
    return max(SOURCE_PIXEL_FACTOR * int(max_pixels or 1024 * 1024), MIN_SOURCE_PIXELS)


def _check_pixels(width: int, height: int, limit: int, name: str) -> None:
    if width * height > limit:
        raise BadRow(f"{name} is {width}x{height} = {width * height:,} pixels, more than {limit:,} "
                     f"({SOURCE_PIXEL_FACTOR} x model.vision.max_pixels); downscale it before training")


def open_image(ref, max_pixels: int | None = None):
    """An RGB PIL image from a path, a ``data:`` URI or a PIL image; unreadable, truncated or oversized images (more
    than ``source_pixel_limit(max_pixels)`` pixels, checked from the header before decoding) make the row bad."""
    from PIL import Image

    limit = source_pixel_limit(max_pixels)
    if isinstance(ref, Image.Image):
        _check_pixels(*ref.size, limit, "decoded image")
        return ref.convert("RGB")
    if isinstance(ref, dict) and ref.get("bytes"):  # Hub datasets' Image feature, undecoded
        ref = io.BytesIO(ref["bytes"])
    elif isinstance(ref, str) and ref.startswith("data:"):
        ref = io.BytesIO(_decode_data_uri(ref))
    elif not isinstance(ref, str):
        raise BadRow(f"image entry of type {type(ref).__name__} is neither a path nor an image")
    name = f"image '{Path(ref).name}'" if isinstance(ref, str) else "inline image"
    try:
        with warnings.catch_warnings():  # Pillow warns past its own limit; ours has already decided
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(ref, formats=IMAGE_FORMATS) as probe:  # reads the header only
                _check_pixels(*probe.size, limit, name)
                probe.verify()  # reads the whole file but leaves the image unusable: open twice
            if isinstance(ref, io.BytesIO):
                ref.seek(0)
            with Image.open(ref, formats=IMAGE_FORMATS) as image:
                return image.convert("RGB")
    except BadRow:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own limit, checked as it opens (before ours)
        raise BadRow(f"{name} is too large to decode safely: {exc}") from None
    except Exception as exc:  # noqa: BLE001 (decoders raise OSError, SyntaxError, ValueError, struct.error, ... on
        # broken or hostile files: the row is lost, not the run)
        raise BadRow(f"unreadable {name}: {exc}") from None


def _decode_data_uri(uri: str) -> bytes:
    head, _, payload = uri.partition(",")
    if not head.startswith("data:image/") or not head.endswith(";base64"):
        raise BadRow("inline image must be a 'data:image/<type>;base64,...' URI")
    if len(payload) // 4 * 3 > MAX_INLINE_IMAGE_BYTES:  # checked before decoding anything
        raise BadRow(f"inline image holds about {len(payload) // 4 * 3 // 2**20} MiB, more than "
                     f"{MAX_INLINE_IMAGE_BYTES // 2**20} MiB; give it as a file")
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


def open_video(ref: str, fps: float, max_frames: int, max_pixels: int | None = None) -> Video:
    """Decode and sample a video file (PyAV) or a folder of frame images, sorted by name; frames over
    ``source_pixel_limit(max_pixels)`` pixels make the row bad."""
    import numpy as np

    path = Path(ref)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise BadRow(f"video frame folder '{path.name}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
        indices = sample_indices(len(files), FRAME_FOLDER_FPS, fps, max_frames)
        frames = [np.asarray(open_image(str(files[i]), max_pixels)) for i in indices]
        if len({f.shape for f in frames}) > 1:
            raise BadRow(f"video frame folder '{path.name}': frames differ in size")
        return Video(np.stack(frames), FRAME_FOLDER_FPS, tuple(indices), len(files))
    try:
        import av
    except ImportError:
        raise BadRow("no video decoder installed: pip install av (or qwen35-tune[vision]), or give a folder of "
                     "pre-extracted frames") from None
    try:
        return _decode_sampled(av, path, fps, max_frames, source_pixel_limit(max_pixels))
    except BadRow:
        raise
    except Exception as exc:  # noqa: BLE001 (av.FFmpegError, OSError, ValueError ... on broken or hostile files)
        raise BadRow(f"unreadable video '{path.name}': {exc}") from None


def _decode_sampled(av, path: Path, fps: float, max_frames: int, limit: int) -> Video:
    """Decode a video keeping only the sampled frames as arrays (a 60 s 640x480 clip: ~14 MB kept, not ~1.6 GB).

    The sample depends on the frame count, which the container states before decoding; where it states none, or a
    wrong one, the frames are counted in a first pass and decoded again, so the frames kept are always those
    ``sample_indices`` picks from the real count.
    """
    import numpy as np

    with av.open(str(path), container_options=VIDEO_OPTIONS) as container:
        stream = container.streams.video[0]
        source_fps = float(stream.average_rate or FRAME_FOLDER_FPS)
        _check_pixels(stream.codec_context.width, stream.codec_context.height, limit, f"video '{path.name}'")
        if stream.frames > MAX_VIDEO_FRAMES:
            raise BadRow(f"video '{path.name}' has {stream.frames:,} frames, more than {MAX_VIDEO_FRAMES:,}; cut it")
        wanted = sample_indices(stream.frames, source_fps, fps, max_frames) if stream.frames else []
        kept, total = _keep_frames(container.decode(stream), wanted, limit, path.name)
    if not total:
        raise BadRow(f"video '{path.name}' has no frames")
    if total != stream.frames:
        wanted = sample_indices(total, source_fps, fps, max_frames)
        with av.open(str(path), container_options=VIDEO_OPTIONS) as container:
            kept, _ = _keep_frames(container.decode(container.streams.video[0]), wanted, limit, path.name)
    frames = [kept[i] for i in wanted if i in kept]
    if len(frames) != len(wanted) or len({f.shape for f in frames}) > 1:
        raise BadRow(f"video '{path.name}': frames changed in number or size while decoding")
    return Video(np.stack(frames), source_fps, tuple(wanted), total)


def _keep_frames(decoded, wanted: list[int], limit: int, name: str) -> tuple[dict, int]:
    """({index: RGB array} of the ``wanted`` frames, number of frames decoded); only kept frames become arrays."""
    wanted_set, kept, total = set(wanted), {}, 0
    for total, frame in enumerate(decoded, start=1):
        if total > MAX_VIDEO_FRAMES:
            raise BadRow(f"video '{name}' has more than {MAX_VIDEO_FRAMES:,} frames; cut it")
        if total - 1 in wanted_set:
            _check_pixels(frame.width, frame.height, limit, f"a frame of video '{name}'")
            kept[total - 1] = frame.to_ndarray(format="rgb24")
    return kept, total


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
