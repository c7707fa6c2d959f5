"""Render + mask + tokenize many canonical rows at once: multi-process ``datasets.map``, with the result cached
on disk under a key made of the rows, the tokenizer, the chat template and the chat options, so a second run with
the same card, tokenizer and template reads the arrow file instead of rendering again.

``datasets`` would fingerprint the map function itself, but hashing a tokenizer is slow and its cache lives next
to the source dataset; an explicit key is cheaper and also changes when the template text does.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
from pathlib import Path

from qwen35_tune.data.batch_render import CompiledChat, render_batch
from qwen35_tune.data.formats import BadRow

log = logging.getLogger(__name__)


def render_cache_dir() -> Path:
    """Where rendered cards are cached: $QWEN35_TUNE_CACHE/rendered, else under the HF datasets cache."""
    if os.environ.get("QWEN35_TUNE_CACHE"):
        return Path(os.environ["QWEN35_TUNE_CACHE"]) / "rendered"
    from datasets import config

    return Path(config.HF_DATASETS_CACHE) / "qwen35_tune_rendered"


# Part of every cache key: bump it whenever a change to rendering, masking or verification changes any output (a row
# that used to be quarantined and now trains counts), so caches written by an older version are not read back.
# 2: tool chains before a later question, decomposed accents and template crashes (session 3 of #3).
# 3: rows keep their key order through the cache (tools and tool-call arguments were rendered sorted), hostile-row
#    limits (nesting, NaN, vision tokens in text, media parts without media, enable_thinking types) (#15).
RENDER_VERSION = "3"


def cache_key(rows_json: list[str], tokenizer, template: str | None, options: dict) -> str:
    """Hash of everything the output depends on (rows, tokenizer vocabulary/merges, template text, options, and the
    renderer's own ``RENDER_VERSION``)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(RENDER_VERSION.encode())
    for part in rows_json:
        h.update(part.encode("utf-8"))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update((backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))).encode())
    h.update((template or tokenizer.chat_template or "").encode("utf-8"))
    h.update(json.dumps(options, sort_keys=True).encode("utf-8"))
    return h.hexdigest()


def freeze_inherited_heap(parent: int) -> None:
    """In a worker forked from process ``parent``, keep the garbage collector off the objects inherited from it.

    A forked worker starts with the parent's whole heap (the rows, the tokenizer, every module); its first full
    collections walked all of it and touched every page (copy-on-write), which made each worker's first batch twice
    as slow as the others (measured). ``gc.freeze`` moves what exists now out of the collector's sight; the worker
    only lives for this map. Never done in the parent itself.
    """
    if os.getpid() != parent and os.getpid() not in _FROZEN:
        gc.freeze()
        _FROZEN.add(os.getpid())


_FROZEN: set[int] = set()


def _render_batch(batch: dict, tokenizer, template, options: dict, parent: int):
    """One map batch as an Arrow table: built straight from the lists with its column types given, because
    ``datasets`` inferring the types of 100k+ Python ints per batch was a sixth of the map's own time."""
    import pyarrow as pa

    freeze_inherited_heap(parent)

    ids, labels, problems = [], [], []
    rows = [json.loads(text) for text in batch["row"]]
    for rendered in render_batch(tokenizer, rows, template=template, **options):
        if isinstance(rendered, BadRow):  # kept as a row so the caller can quarantine it with its index
            ids.append([])
            labels.append([])
            problems.append(str(rendered))
        else:
            ids.append(rendered.input_ids)
            labels.append(rendered.labels)
            problems.append("")
    tokens = pa.list_(pa.int32())
    return pa.table({"input_ids": pa.array(ids, type=tokens), "labels": pa.array(labels, type=tokens),
                     "problem": pa.array(problems, type=pa.string())})


def render_rows_cached(
    rows: list[dict], tokenizer, *, template: str | None = None, cache_dir: Path | None = None,
    num_proc: int | None = None, **options,
):
    """A ``datasets.Dataset`` with ``input_ids``, ``labels`` and ``problem`` ('' = fine) per row, in row order.

    ``options`` are render_with_mask's (train_on, mask_empty_think, enable_thinking).
    """
    from datasets import Dataset

    rows_json = [json.dumps(r, ensure_ascii=False) for r in rows]
    key = cache_key(rows_json, tokenizer, template, options)
    path = Path(cache_dir) / f"render-{key}.arrow" if cache_dir else None
    if path is not None and path.is_file():
        log.info("rendered rows read from cache %s", path)
        return Dataset.from_file(str(path))
    num_proc = num_proc or min(os.cpu_count() or 1, 8)
    # Compiled here once: forked workers inherit the compiled template (and the imports it needs) instead of each
    # compiling it again (about 35 ms per worker, measured).
    CompiledChat(tokenizer, template).warm_up(rows, options)
    table = Dataset.from_dict({"row": rows_json})
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return table.map(
        _render_batch, batched=True, batch_size=1000, remove_columns=["row"],
        fn_kwargs={"tokenizer": tokenizer, "template": template, "options": options, "parent": os.getpid()},
        num_proc=num_proc if len(rows) >= 512 and num_proc > 1 else None,
        cache_file_name=str(path) if path is not None else None, new_fingerprint=key, desc="render + mask",
    )
