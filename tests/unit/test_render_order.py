"""Training, preview and inference render the same text: rows keep their key order (tool schemas, tool-call
arguments) through the render cache, so the model is trained on arguments in the order its prompts show them."""

from __future__ import annotations

import json
import random

import pytest

from qwen35_tune.data.build import build_datasets
from qwen35_tune.data.formats import normalise_row
from qwen35_tune.data.preview import preview_rows
from qwen35_tune.recipe import load_recipe
from tests.unit.data_kit import random_conversation

KEYS = ["zeta", "alpha", "mid", "beta"]  # deliberately not sorted


def _unsorted(rng: random.Random) -> dict:
    """A random conversation whose tools and tool calls carry several parameters in unsorted order."""
    row = random_conversation(rng, content_parts=False)
    keys = rng.sample(KEYS, k=len(KEYS))
    for message in row["messages"]:
        for call in message.get("tool_calls") or []:
            call["function"]["arguments"] = {key: f"{key}-{rng.randint(0, 9)}" for key in keys}
    if "tools" in row:
        row["tools"][0]["function"]["parameters"]["properties"] = {key: {"type": "string"} for key in keys}
    return row


# The default run builds a card of the first 20 of the 60 conversations (13 with tools, 4 with their own
# enable_thinking), the slow lane one of the other 40.
@pytest.mark.parametrize("rows_slice", [pytest.param(slice(0, 20), id="first"),
                                        pytest.param(slice(20, 60), id="rest", marks=pytest.mark.slow)])  # fmt: skip
def test_training_preview_and_apply_chat_template_render_identically(tmp_path, tiny_tokenizer, rows_slice):
    rng = random.Random(3)
    raws = [_unsorted(rng) for _ in range(60)][rows_slice]
    assert sum("tools" in raw for raw in raws) > len(raws) / 3 and any("enable_thinking" in raw for raw in raws)
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(raw, ensure_ascii=False) + "\n" for raw in raws))
    (tmp_path / "c.yaml").write_text("name: c\nlicense: mit\nsource: {path: c.jsonl}\nmax_bad_fraction: 0\n")
    (tmp_path / "r.yaml").write_text("name: r\nmodel: {name_or_path: 'tiny://dense'}\ntrain: {max_length: 8192}\n"
                                     "data: {cards: [{path: c.yaml}], dedupe: false}\n")
    recipe = load_recipe(tmp_path / "r.yaml")
    train, _, _ = build_datasets(recipe, tiny_tokenizer)
    preview = preview_rows(recipe, tiny_tokenizer, len(raws))
    assert len(train) == len(preview) == len(raws)
    for index, (raw, ids, shown) in enumerate(zip(raws, train["input_ids"], preview, strict=True)):
        row = normalise_row(raw, "messages")
        messages, kwargs = row["messages"], {}
        if "enable_thinking" in row:  # a non-thinking request: the client sends no reasoning and turns thinking off
            messages = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in messages]
            kwargs = {"enable_thinking": row["enable_thinking"]}
        inference = tiny_tokenizer.apply_chat_template(messages, tools=row.get("tools"), tokenize=False, **kwargs)
        assert shown.row.text == inference, index
        assert ids == shown.row.input_ids == tiny_tokenizer(inference, add_special_tokens=False)["input_ids"], index
        if "tools" in row:  # the data's order, not alphabetical
            order = [inference.find(f'"{key}"') for key in row["tools"][0]["function"]["parameters"]["properties"]]
            assert order == sorted(order) and min(order) > 0, index


def test_image_rows_keep_their_order_through_the_media_cache(tmp_path, small_vision):
    """The cached multi-process media renderer gives what rendering the row directly gives, tools included."""
    from PIL import Image

    from qwen35_tune.data.cached_media_render import render_media_rows_cached
    from qwen35_tune.data.render_media import render_multimodal

    processor, settings = small_vision
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "red.png")
    rng = random.Random(5)
    rows = []
    while len(rows) < 6:
        raw = _unsorted(rng)
        if "tools" in raw:
            rows.append(normalise_row({**raw, "images": [str(tmp_path / "red.png")]}, "messages"))
    table = render_media_rows_cached(rows, processor, processor.tokenizer, settings, cache_dir=tmp_path / "cache",
                                     num_proc=1)
    for record, row in zip(table, rows, strict=True):
        assert record["problem"] == ""
        assert record["input_ids"] == render_multimodal(processor, processor.tokenizer, row, settings).input_ids
