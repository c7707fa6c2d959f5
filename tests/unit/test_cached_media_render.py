"""Image rows are rendered through a cache like text rows: the same result as rendering one by one, read back on the
second build, and rendered again when an image file changes."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("torchvision")


def _rows(tmp_path):
    from PIL import Image

    rows = []
    for i, colour in enumerate([(200, 20, 20), (20, 20, 200), (20, 160, 20)]):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (48 + 16 * i, 32), colour).save(path)
        rows.append({"messages": [{"role": "user", "content": f"<image> Colour {i}?"},
                                  {"role": "assistant", "content": f"Colour number {i}."}], "images": [str(path)]})
    rows.append({"messages": [{"role": "user", "content": "<image> <image> two?"},
                              {"role": "assistant", "content": "One image."}], "images": [str(path)]})  # bad row
    return rows


def test_cached_render_equals_one_by_one_and_is_reused(tmp_path, small_vision, caplog):
    import logging

    from qwen35_tune.data.cached_media_render import render_media_rows_cached
    from qwen35_tune.data.render_media import render_multimodal

    processor, settings = small_vision
    rows = _rows(tmp_path)
    table = render_media_rows_cached(rows, processor, processor.tokenizer, settings, cache_dir=tmp_path / "cache",
                                     num_proc=1)
    for record, row in zip(table, rows[:3], strict=False):
        expected = render_multimodal(processor, processor.tokenizer, row, settings)
        assert record["problem"] == "" and record["input_ids"] == expected.input_ids
        assert record["labels"] == expected.labels
        assert record["image_grid_thw"] == expected.media["image_grid_thw"].tolist()
        assert record["image_refs"] == row["images"]
    assert "placeholders" in table[3]["problem"]  # a bad row comes back with its reason, in place

    with caplog.at_level(logging.INFO, logger="qwen35_tune.data.cached_media_render"):
        again = render_media_rows_cached(rows, processor, processor.tokenizer, settings, cache_dir=tmp_path / "cache")
    assert "read from cache" in caplog.text and again["input_ids"] == table["input_ids"]

    path = rows[0]["images"][0]
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # an edited image: rendered again
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="qwen35_tune.data.cached_media_render"):
        render_media_rows_cached(rows, processor, processor.tokenizer, settings, cache_dir=tmp_path / "cache")
    assert "read from cache" not in caplog.text
    assert json.dumps(rows)  # the rows themselves are untouched JSON
