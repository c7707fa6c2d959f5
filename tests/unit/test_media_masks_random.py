"""Random conversations with images (tool chains, several questions, placeholders or not): the media path never
trains a vision token and trains exactly the text the same conversation trains without its images."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from qwen35_tune.data.formats import normalise_row
from qwen35_tune.data.render import render_with_mask, trained_runs, trained_texts
from qwen35_tune.data.render_media import render_multimodal
from tests.unit.data_kit import conversation_features, random_conversation


def _image_conversations(rng: random.Random, paths: list[str], count: int) -> list[tuple[dict, bool]]:
    """(raw row, placeholders written) per random conversation with 1-3 of the images."""
    out = []
    for _ in range(count):
        raw = random_conversation(rng, content_parts=False)
        raw["images"] = [rng.choice(paths) for _ in range(rng.randint(1, 3))]
        placeholders = rng.random() < 0.5
        if placeholders:  # explicit <image> placeholders in the user turns
            users = [m for m in raw["messages"] if m["role"] == "user"]
            for _ in raw["images"]:
                rng.choice(users)["content"] += " <image>"
        out.append((raw, placeholders))
    return out


# The default run renders the first 15 of the 40 conversations (checked to hold rows with and without placeholders,
# several images and tool chains before a later question), the slow lane the other 25.
@pytest.mark.parametrize("rows_slice", [pytest.param(slice(0, 15), id="first"),
                                        pytest.param(slice(15, 40), id="rest", marks=pytest.mark.slow)])  # fmt: skip
def test_random_image_conversations_train_the_text_only_spans(tmp_path, small_vision, rows_slice):
    rng, pixels = random.Random(0), np.random.default_rng(0)
    paths = []
    for i in range(4):
        shape = (rng.randint(20, 90), rng.randint(20, 90), 3)
        Image.fromarray(pixels.integers(0, 255, shape, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    processor, settings = small_vision
    tokenizer = processor.tokenizer
    vision_ids = {tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>")}
    conversations = _image_conversations(rng, paths, 40)[rows_slice]
    if rows_slice.start == 0:
        assert {placeholders for _, placeholders in conversations} == {True, False}
        assert any(len(raw["images"]) > 1 for raw, _ in conversations)
        assert any("tool chain before a later question" in conversation_features(raw) for raw, _ in conversations)
    for index, (raw, _) in enumerate(conversations, start=rows_slice.start):
        row = normalise_row(raw, "messages")
        media = render_multimodal(processor, tokenizer, row, settings)
        assert all(label == -100 for token, label in zip(media.input_ids, media.labels, strict=True)
                   if token in vision_ids), index
        text_only = render_with_mask(tokenizer, {k: v for k, v in row.items() if k != "images"})
        runs = trained_runs(media.labels)
        got = [tokenizer.decode(media.input_ids[a:b], skip_special_tokens=False) for a, b in runs]
        assert got == trained_texts(text_only, tokenizer), index
