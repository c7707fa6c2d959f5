"""How tokenised rows become batches for a run: packed (``train.packing``) or padded, plus the collator for each."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from qwen35_tune import strict_json
from qwen35_tune.errors import UserError
from qwen35_tune.models.processor import missing_processor

log = logging.getLogger(__name__)


def prepare_batching(recipe, train_ds, eval_ds, pad_token_id: int, run_dir: Path | None = None, processor=None):
    """(train, eval, collator): rows packed to ``train.packing_length`` when ``train.packing``, else as built.

    Packing also installs the per-sample Gated DeltaNet fallback (``qwen35_tune.patches``) when the varlen kernels
    are missing, and adds the packing figures to ``data_stats.json``. Datasets with image/video rows get the
    ``VisionCollator`` instead (packed with their media by ``data.pack_media``; call its ``bind_model(model)``).
    """
    from qwen35_tune.train.collator import build_collator

    train = recipe.train
    from qwen35_tune.train.stream_trainer import is_stream

    if is_stream(train_ds):  # packed as it is read (data.streaming); the eval rows as usual
        from qwen35_tune.train.stream_trainer import StreamCollator

        if train.packing:
            from qwen35_tune.data.packing import pack_rows

            _ensure_packed_rows_supported()
            length = train.packing_length or train.max_length
            eval_ds = pack_rows(eval_ds, length, recipe.seed) if eval_ds is not None else None
        return train_ds, eval_ds, StreamCollator(build_collator(pad_token_id, packed=train.packing))
    with_media = [ds for ds in (train_ds, eval_ds) if ds is not None and "mm_token_type_ids" in ds.column_names]
    if with_media and missing_processor(processor) is None:
        if train.packing:
            from qwen35_tune.data.pack_media import pack_media_rows

            train_ds, eval_ds = _pack(recipe, train_ds, eval_ds, run_dir, pack_media_rows, "packing (with media)")
        return train_ds, eval_ds, _vision_collator(recipe, processor, pad_token_id)
    if not train.packing:
        return train_ds, eval_ds, build_collator(pad_token_id, packed=False)
    from qwen35_tune.data.packing import pack_rows

    train_ds, eval_ds = _pack(recipe, train_ds, eval_ds, run_dir, pack_rows, "packing")
    return train_ds, eval_ds, build_collator(pad_token_id, packed=True)


def _ensure_packed_rows_supported() -> None:
    from qwen35_tune import patches

    try:
        if patches.varlen_kernels_available():
            return
    except patches.UpstreamChanged as exc:  # which kernel runs cannot be read on this transformers
        from qwen35_tune.doctor import UPSTREAM_FIX

        raise UserError(f"train.packing: {exc}; {UPSTREAM_FIX}") from None
    if not patches.apply_gdn_packed_segments():
        import transformers

        low, high = patches.GDN_PATCH_VERSIONS
        raise UserError(
            f"train.packing: without flash-linear-attention and causal-conv1d, packing needs the per-sample Gated "
            f"DeltaNet fallback, tested on transformers {low}..{high} (installed: {transformers.__version__}); "
            "install qwen35-tune[kernels] on a GPU, change transformers, or set train.packing: false"
        )


def _vision_collator(recipe, processor, pad_token_id: int):
    """Multimodal rows' collator: packed rows split per sample; sharded runs feed text-only batches a dummy image."""
    import os

    from qwen35_tune.train.vision_collator import build_vision_collator

    sharded = int(os.environ.get("WORLD_SIZE", "1")) > 1  # ZeRO-3 / FSDP: every rank must run the vision tower
    return build_vision_collator(processor, pad_token_id, packed=recipe.train.packing, dummy_image=sharded,
                                 settings=recipe.model.vision)


def _pack(recipe, train_ds, eval_ds, run_dir: Path | None, pack, label: str):
    """Both datasets packed to ``train.packing_length`` by ``pack`` (text rows: ``data.packing.pack_rows``; image and
    video rows with their media: ``data.pack_media.pack_media_rows``), the packing figures added to data_stats.json."""
    from qwen35_tune.data.packing import packing_stats

    _ensure_packed_rows_supported()
    length = recipe.train.packing_length or recipe.train.max_length
    train_ds = pack(train_ds, length, recipe.seed)
    eval_ds = pack(eval_ds, length, recipe.seed) if eval_ds is not None else None
    stats = packing_stats(train_ds, length)
    log.info("%s: %d rows -> %d packed rows of <= %d tokens (efficiency %.4f)",
             label, stats.samples, stats.packed_rows, length, stats.efficiency)  # fmt: skip
    if run_dir is not None and (run_dir / "data_stats.json").exists():
        data_stats = json.loads((run_dir / "data_stats.json").read_text())
        data_stats["packing"] = stats.to_dict()
        (run_dir / "data_stats.json").write_text(strict_json.dumps(data_stats, indent=2))
    return train_ds, eval_ds
