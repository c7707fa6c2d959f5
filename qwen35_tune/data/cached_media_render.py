"""Render rows with images/videos in several processes and cache the result on disk, like text rows
(``data.cached_render``): a second run over the same card reads the arrow file instead of running the processor.

The middle layer of the data pipeline: it maps ``render_media.render_multimodal`` (one row) over many rows;
``build`` (one card) calls it. Imports point down only.

The cache key adds to the text key (rows, tokenizer, template, chat options) the processor's image and video
settings, the recipe's ``model.vision`` budgets, and each media file's size and modification time, so an edited
image or other pixel budgets render again. What is stored is what training keeps (ids, labels, token types, grids and
media references; pixels are made per batch by ``render_media.PixelLoader``). Rows whose media are not references
(decoded images from a Hub dataset) cannot be written as JSON and are rendered in-process without a cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from qwen35_tune.data.cached_render import cache_key, freeze_inherited_heap
from qwen35_tune.data.formats import BadRow
from qwen35_tune.data.render_media import GRID_KEYS, REF_KEYS, MultimodalRow, render_multimodal

log = logging.getLogger(__name__)

COLUMNS = ("input_ids", "labels", "problem", "mm_token_type_ids", "image_grid_thw", "video_grid_thw", "image_refs",
           "video_refs")  # fmt: skip


def media_cache_key(rows_json: list[str], rows: list[dict], processor, tokenizer, settings, options: dict) -> str:
    """The text cache key plus processor settings, pixel budgets and each media file's size and mtime."""
    h = hashlib.blake2b(digest_size=16)
    h.update(cache_key(rows_json, tokenizer, options.get("template"), options).encode())
    for part in (processor.image_processor, getattr(processor, "video_processor", None)):
        if part is not None:
            h.update(part.to_json_string().encode("utf-8"))
    h.update(json.dumps([settings.min_pixels, settings.max_pixels, settings.max_frames, settings.fps]).encode())
    for row in rows:
        for ref in [*(row.get("images") or []), *(row.get("videos") or [])]:
            if isinstance(ref, str) and not ref.startswith("data:") and os.path.exists(ref):
                stat = os.stat(ref)
                h.update(f"{ref}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return h.hexdigest()


def _render_batch(batch: dict, processor, tokenizer, settings, options: dict, parent: int) -> dict:
    freeze_inherited_heap(parent)

    out: dict[str, list] = {name: [] for name in COLUMNS}
    for text in batch["row"]:
        try:
            row = render_multimodal(processor, tokenizer, json.loads(text), settings, **options)
        except BadRow as exc:  # kept as a row so the caller can quarantine it with its index
            for name in COLUMNS:
                out[name].append("" if name == "problem" else [])
            out["problem"][-1] = str(exc)
            continue
        out["input_ids"].append(row.input_ids)
        out["labels"].append(row.labels)
        out["problem"].append("")
        out["mm_token_type_ids"].append(row.mm_token_type_ids)
        for grid in GRID_KEYS:
            out[grid].append(row.media[grid].tolist() if grid in row.media else [])
        for refs in REF_KEYS:
            out[refs].append(row.refs.get(refs, []))
    return out


def render_media_rows_cached(rows: list[dict], processor, tokenizer, settings, *, cache_dir: Path | None,
                             num_proc: int | None = None, **options):
    """A ``datasets.Dataset`` with ``COLUMNS`` per row ('' problem = fine), in row order; None when the rows hold
    decoded images (not JSON) and must be rendered in-process."""
    from datasets import Dataset, Features, Sequence, Value

    try:
        rows_json = [json.dumps(r, ensure_ascii=False) for r in rows]
    except TypeError:
        return None
    key = media_cache_key(rows_json, rows, processor, tokenizer, settings, options)
    path = Path(cache_dir) / f"render-media-{key}.arrow" if cache_dir else None
    if path is not None and path.is_file():
        log.info("rendered image/video rows read from cache %s", path)
        return Dataset.from_file(str(path))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    num_proc = num_proc or min(os.cpu_count() or 1, 8)
    ints, grids, strings = Sequence(Value("int64")), Sequence(Sequence(Value("int64"))), Sequence(Value("string"))
    features = Features({"input_ids": ints, "labels": ints, "problem": Value("string"), "mm_token_type_ids": ints,
                         "image_grid_thw": grids, "video_grid_thw": grids, "image_refs": strings,
                         "video_refs": strings})  # fmt: skip
    return Dataset.from_dict({"row": rows_json}).map(
        _render_batch, batched=True, batch_size=64, remove_columns=["row"], features=features,
        fn_kwargs={"processor": processor, "tokenizer": tokenizer, "settings": settings, "options": options,
                   "parent": os.getpid()},
        num_proc=num_proc if len(rows) >= 256 and num_proc > 1 else None,
        cache_file_name=str(path) if path is not None else None, new_fingerprint=key, desc="render images/videos",
    )


def render_media_rows(rows: list[dict], processor, tokenizer, settings, *, cache_dir: Path | None,
                      **options) -> list[MultimodalRow | BadRow]:
    """A MultimodalRow, or the BadRow saying why not, per row in row order: multi-process and cached when the rows
    are JSON, else rendered one by one here."""
    import numpy as np

    if not rows:
        return []
    table = render_media_rows_cached(rows, processor, tokenizer, settings, cache_dir=cache_dir, **options)
    if table is None:
        out: list[MultimodalRow | BadRow] = []
        for row in rows:
            try:
                out.append(render_multimodal(processor, tokenizer, row, settings, **options))
            except BadRow as exc:
                out.append(exc)
        return out
    out = []
    for record in table:
        if record["problem"]:
            out.append(BadRow(record["problem"]))
            continue
        media = {g: np.asarray(record[g], dtype=np.int64).reshape(-1, 3) for g in GRID_KEYS if record[g]}
        out.append(MultimodalRow("", record["input_ids"], record["labels"], (),
                                 mm_token_type_ids=record["mm_token_type_ids"], media=media,
                                 refs={k: record[k] for k in REF_KEYS}))  # fmt: skip
    return out
