"""Render a row with images/videos: media placed in Qwen's content-list form, masks from ``render_with_mask``,
vision tokens expanded by the processor.

Masking reuses the text path unchanged: the conversation is rendered (one ``<|image_pad|>`` / ``<|video_pad|>`` per
medium, as the chat template writes it) and masked by ``data.render.render_with_mask``, under the same ``train_on``
and thinking policies as text rows. The processor then expands each pad into the medium's vision tokens (and, for
videos, per-frame timestamps). Pads are special tokens, so the text around them tokenises identically in both; we
walk the two id lists side by side, give every expanded token label -100, and quarantine a row whose ids disagree
anywhere else. Vision tokens (``mm_token_type_ids`` != 0, vision start/end) never carry a label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from qwen35_tune.data.bad_row import BadRow
from qwen35_tune.data.media import open_image, open_video
from qwen35_tune.data.messages import media_part_kind
from qwen35_tune.data.render import RenderedRow, render_with_mask

PLACEHOLDER = re.compile(r"<(image|video)>")
MEDIA_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")
GRID_KEYS = ("image_grid_thw", "video_grid_thw")
REF_KEYS = ("image_refs", "video_refs")  # what the dataset stores instead of pixels (see PixelLoader)


@dataclass(frozen=True)
class MultimodalRow(RenderedRow):
    """A rendered row plus what the model needs for its media: ``mm_token_type_ids`` and the ``MEDIA_KEYS`` arrays."""

    mm_token_type_ids: list[int] = field(default_factory=list)
    media: dict = field(default_factory=dict)
    refs: dict = field(default_factory=dict)  # image_refs / video_refs: strings the PixelLoader reopens


def has_media(row: dict) -> bool:
    """True for a canonical row that names images or videos."""
    return bool(row.get("images") or row.get("videos"))


def place_media(messages: list[dict], n_images: int, n_videos: int) -> list[dict]:
    """Messages in content-list form with one ``{"type": "image"|"video"}`` part per medium, in order.

    ``<image>`` / ``<video>`` in user text mark where each goes (their count must equal the row's media count); a
    kind without any placeholder is put in order at the start of the first user turn, where Qwen's examples put it.
    """
    found = {"image": 0, "video": 0}
    placed = []
    for message in messages:
        parts = _parts(message["content"]) if message["role"] == "user" else None
        if parts is None:
            placed.append(message)
            continue
        for part in parts:
            if part.get("type") in found:
                found[part["type"]] += 1
        placed.append({**message, "content": parts})
    wanted = {"image": n_images, "video": n_videos}
    for kind in ("image", "video"):
        if found[kind] and found[kind] != wanted[kind]:
            raise BadRow(f"{wanted[kind]} {kind}s for {found[kind]} <{kind}> placeholders (they must match)")
    first_user = next((i for i, m in enumerate(placed) if m["role"] == "user"), None)
    missing = [{"type": kind} for kind in ("image", "video") if not found[kind] for _ in range(wanted[kind])]
    if missing:
        if first_user is None:
            raise BadRow("row has media but no user turn to attach it to")
        message = placed[first_user]
        placed[first_user] = {**message, "content": missing + message["content"]}
    return placed


def _parts(content) -> list[dict]:
    """User content as a list of parts; ``<image>``/``<video>`` in text become media parts."""
    if isinstance(content, list):
        raw = [p if isinstance(p, dict) else {"type": "text", "text": str(p)} for p in content]
    else:
        raw = [{"type": "text", "text": content or ""}]
    parts = []
    for part in raw:
        kind = media_part_kind(part)
        if kind is not None:  # OpenAI's image_url parts and Qwen's {"image": ...} parts count as images too
            parts.append({"type": kind})
            continue
        if part.get("type", "text") != "text":
            parts.append(part)
            continue
        pieces = PLACEHOLDER.split(part.get("text", ""))
        for i, piece in enumerate(pieces):
            if i % 2:  # odd pieces are the captured placeholder names
                parts.append({"type": piece})
            elif piece:
                parts.append({"type": "text", "text": piece})
    return parts


def render_multimodal(processor, tokenizer, row: dict, settings, **mask_options) -> MultimodalRow:
    """A canonical row with ``images``/``videos`` → ids, labels, ``mm_token_type_ids`` and pixel arrays.

    ``settings`` carries ``fps`` and ``max_frames`` (``model.vision``); ``mask_options`` are ``render_with_mask``'s
    (``template``, ``train_on``, ``mask_empty_think``, ``enable_thinking``). Bad media raise ``BadRow``.
    """
    limit = settings.max_pixels
    images = [open_image(ref, limit) for ref in row.get("images") or []]
    videos = [open_video(ref, settings.fps, settings.max_frames, limit) for ref in row.get("videos") or []]
    messages = place_media(row["messages"], len(images), len(videos))
    text_row = render_with_mask(tokenizer, {**row, "messages": messages}, **mask_options)
    kwargs = {}
    if videos:
        from transformers.video_utils import VideoMetadata

        kwargs = {"video_metadata": [_metadata(VideoMetadata, v) for v in videos], "do_sample_frames": False}
    try:
        encoded = processor(text=[text_row.text], images=images or None, videos=[v.frames for v in videos] or None,
                            return_mm_token_type_ids=True, return_tensors="np", **kwargs)
    except (ValueError, TypeError) as exc:  # e.g. an image smaller than one patch after resizing limits
        raise BadRow(f"processor rejected the media: {exc}") from None
    ids = encoded["input_ids"][0].tolist()
    frames = [int(g[0]) for g in encoded["video_grid_thw"]] if videos else []
    labels = expand_labels(text_row, ids, processor, frames)
    types = encoded["mm_token_type_ids"][0].tolist()
    labels = [-100 if t else label for t, label in zip(types, labels, strict=True)]
    media = {k: encoded[k].astype("float32" if k.startswith("pixel") else "int64", copy=False)  # no copy if so already
             for k in MEDIA_KEYS if k in encoded}
    refs = {"image_refs": [storable_ref(r) for r in row.get("images") or []],
            "video_refs": [str(r) for r in row.get("videos") or []]}  # fmt: skip
    return MultimodalRow(text_row.text, ids, labels, text_row.spans, mm_token_type_ids=types, media=media, refs=refs)


def storable_ref(ref) -> str:
    """An image reference as a string the PixelLoader can reopen: paths and data URIs as they are, decoded images
    (a Hub dataset's PIL images or raw bytes) as PNG data URIs."""
    import base64
    import io

    if isinstance(ref, str):
        return ref
    if isinstance(ref, dict) and ref.get("bytes"):
        data = ref["bytes"]
    else:
        buffer = io.BytesIO()
        open_image(ref).save(buffer, format="PNG")
        data = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


class PixelLoader:
    """Pixel arrays for a row's media, made when a batch is collated rather than stored in the dataset.

    Why: stored pixels cost 4 bytes x 1536 values per 16x16 patch (a 1024x1024 page is ~25 MB), so an image card
    of a few thousand rows would become tens of GB of Arrow. The dataset keeps each medium's reference and grid; this
    reopens the media and runs the same image/video processor the render used, and a grid that differs from the
    stored one (a changed file, other processor settings) is an error rather than misaligned vision tokens.
    """

    def __init__(self, processor, settings):
        self.processor, self.settings = processor, settings

    def __call__(self, image_refs: list[str], video_refs: list[str]) -> dict:
        out = {}
        if image_refs:
            images = [open_image(r, self.settings.max_pixels) for r in image_refs]
            encoded = self.processor.image_processor(images=images, return_tensors="np")
            out["pixel_values"], out["image_grid_thw"] = encoded["pixel_values"], encoded["image_grid_thw"]
        if video_refs:
            from transformers.video_utils import VideoMetadata

            videos = [open_video(r, self.settings.fps, self.settings.max_frames, self.settings.max_pixels)
                      for r in video_refs]
            encoded = self.processor.video_processor(
                videos=[v.frames for v in videos], video_metadata=[_metadata(VideoMetadata, v) for v in videos],
                do_sample_frames=False, return_tensors="np",
            )
            out.update(pixel_values_videos=encoded["pixel_values_videos"], video_grid_thw=encoded["video_grid_thw"])
        return {k: v.astype("float32" if k.startswith("pixel") else "int64") for k, v in out.items()}


def _metadata(cls, video):
    height, width = video.frames.shape[1:3]
    return cls(total_num_frames=video.total_frames, fps=video.fps, width=width, height=height,
               duration=video.total_frames / video.fps, frames_indices=list(video.indices))


def expand_labels(text_row: RenderedRow, expanded_ids: list[int], processor, video_frames: list[int]) -> list[int]:
    """Labels for the processor's expanded ids, from the unexpanded row's; every expanded vision token is -100."""
    tokenizer = processor.tokenizer
    image_pad, video_pad = processor.image_token_id, processor.video_token_id
    vision_end = tokenizer.convert_tokens_to_ids("<|vision_end|>")
    labels: list[int] = []
    j, frames = 0, iter(video_frames)
    for token, label in zip(text_row.input_ids, text_row.labels, strict=True):
        if token == image_pad:
            start = j
            while j < len(expanded_ids) and expanded_ids[j] == image_pad:
                j += 1
            if j == start:
                raise BadRow("processor output has no image tokens where the template put an image")
        elif token == video_pad:  # expands to T x (timestamp, vision start, pads, vision end)
            start, ends, want = j, 0, next(frames, 0)
            while j < len(expanded_ids) and ends < want:
                ends += expanded_ids[j] == vision_end
                j += 1
            if ends != want:
                raise BadRow("processor output does not hold the video's frames where the template put the video")
        else:
            if j >= len(expanded_ids) or expanded_ids[j] != token:
                raise BadRow("processor and tokenizer disagree on the text around the media (mask alignment failed)")
            labels.append(label)
            j += 1
            continue
        labels.extend([-100] * (j - start))
    if j != len(expanded_ids):
        raise BadRow("processor output is longer than the rendered conversation (mask alignment failed)")
    return labels
