"""Load a Qwen3.5 checkpoint's processor (tokenizer + image + video processors) with Qwen3.5's vision settings.

``AutoProcessor`` needs torchvision for the video processor; without it transformers quietly hands back the bare
tokenizer, which would then train image rows as text. We detect that and say what to install. The image processor
class defaults are Qwen2-VL's (patch 14, CLIP mean/std), so Qwen3.5's values are set explicitly, whatever a
checkpoint's saved config says, together with the pixel budgets of the recipe's ``model.vision`` section.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from qwen35_tune.errors import UserError
from qwen35_tune.models.source_errors import checkpoint_source
from qwen35_tune.registry import QWEN35_VISION

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install torch==2.14.1 torchvision==0.29.1 (or pip install 'qwen35-tune[vision]')"


@dataclass(frozen=True)
class VisionSettings:
    """Pixel budgets (the recipe's ``model.vision`` values and defaults); any object with these attributes works."""

    min_pixels: int = 32 * 32
    max_pixels: int = 1024 * 1024
    max_frames: int = 16
    fps: float = 2.0


def is_vision_config(config) -> bool:
    """True for a checkpoint whose config carries a vision tower (``...ForConditionalGeneration``)."""
    return getattr(config, "vision_config", None) is not None


def load_processor(name_or_path: str, settings=None, revision: str | None = None, chat_template: str | None = None):
    """The checkpoint's processor via ``AutoProcessor``, with Qwen3.5's image settings and the recipe's budgets.

    ``settings``: an object with ``min_pixels``, ``max_pixels``, ``max_frames``, ``fps`` (``model.vision``);
    None = ``VisionSettings()``. Raises UserError when only a tokenizer comes back (torchvision missing).
    """
    from transformers import AutoProcessor, PreTrainedTokenizerBase

    settings = settings or VisionSettings()
    try:
        with checkpoint_source(name_or_path, what="processor"):
            processor = AutoProcessor.from_pretrained(name_or_path, revision=revision)
    except (ImportError, ModuleNotFoundError) as exc:
        raise UserError(f"cannot load the image processor of '{name_or_path}' ({exc}); {INSTALL_HINT}") from None
    if isinstance(processor, PreTrainedTokenizerBase) or getattr(processor, "image_processor", None) is None:
        raise UserError(
            f"'{name_or_path}' loaded as a bare tokenizer, not a vision processor: transformers does this when "
            f"torchvision is missing or does not match torch. Install a matching pair: {INSTALL_HINT}"
        )
    configure_processor(processor, settings)
    if chat_template is not None:
        processor.chat_template = chat_template
        processor.tokenizer.chat_template = chat_template
    return processor


def configure_processor(processor, settings) -> None:
    """Set Qwen3.5's patch/merge/normalisation and the pixel budgets on the image and video processors in place."""
    size = {"shortest_edge": int(settings.min_pixels), "longest_edge": int(settings.max_pixels)}
    for part in (processor.image_processor, getattr(processor, "video_processor", None)):
        if part is None:
            continue
        for key, value in QWEN35_VISION.items():
            setattr(part, key, list(value) if isinstance(value, list) else value)
        # Qwen2-VL-style processors read min/max pixels from `size` (shortest_edge/longest_edge are pixel counts).
        part.size = size
        for key, value in (("min_pixels", size["shortest_edge"]), ("max_pixels", size["longest_edge"])):
            if hasattr(part, key):
                setattr(part, key, value)
    video = getattr(processor, "video_processor", None)
    if video is not None:
        video.fps = float(settings.fps)
        if hasattr(video, "cap_pixels_per_frame"):  # qwen-vl-utils' per-frame pixel cap (transformers >= 5.2x)
            video.cap_pixels_per_frame = True
        if hasattr(video, "max_frames"):
            video.max_frames = int(settings.max_frames)
    log.info("processor: patch 16, merge 2, mean/std 0.5, pixels %d..%d", settings.min_pixels, settings.max_pixels)


@dataclass(frozen=True)
class NoProcessor:
    """A run without a vision processor, and why: a card with images or videos is refused with ``reason``."""

    reason: str


TEXT_ONLY = NoProcessor("the model has no vision tower (a text-only checkpoint)")


def missing_processor(processor) -> NoProcessor | None:
    """Why ``processor`` cannot render media rows (None counts as a text-only model), or None when it can."""
    if processor is None:
        return TEXT_ONLY
    return processor if isinstance(processor, NoProcessor) else None


def processor_for_run(recipe, model_path: str, chat_template: str | None = None):
    """The processor a run renders media rows with, or a ``NoProcessor`` saying why there is none.

    A text-only checkpoint has none (``TEXT_ONLY``). For a vision checkpoint whose processor cannot load (torchvision
    missing) the error is kept as the reason instead of raised, so text-only data on a vision checkpoint still
    trains; a card with images then fails with that message (``data.build``).
    """
    from qwen35_tune.models.load import load_config

    if not is_vision_config(load_config(model_path, recipe.model.revision)):
        return TEXT_ONLY
    try:
        return load_processor(model_path, recipe.model.vision, recipe.model.revision, chat_template)
    except UserError as exc:
        log.warning("no vision processor: %s", exc)
        return NoProcessor(str(exc))
