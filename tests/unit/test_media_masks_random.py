"""Random conversations with images (tool chains, several questions, placeholders or not): the media path never
trains a vision token and trains exactly the text the same conversation trains without its images."""

from __future__ import annotations

import random

import numpy as np
from PIL import Image

from qwen35_tune.data.formats import normalise_row
from qwen35_tune.data.render import render_with_mask, trained_runs, trained_texts
from qwen35_tune.data.render_media import render_multimodal
from tests.unit.test_official_templates import _random_conversation


def test_random_image_conversations_train_the_text_only_spans(tmp_path, tiny_vision):
    from qwen35_tune.models.processor import VisionSettings, load_processor

    rng, pixels = random.Random(0), np.random.default_rng(0)
    paths = []
    for i in range(4):
        shape = (rng.randint(20, 90), rng.randint(20, 90), 3)
        Image.fromarray(pixels.integers(0, 255, shape, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    settings = VisionSettings(min_pixels=32 * 32, max_pixels=64 * 64)
    processor = load_processor(str(tiny_vision), settings)
    tokenizer = processor.tokenizer
    vision_ids = {tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>")}
    for index in range(40):
        raw = _random_conversation(rng, content_parts=False)
        raw["images"] = [rng.choice(paths) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.5:  # explicit <image> placeholders in the user turns
            users = [m for m in raw["messages"] if m["role"] == "user"]
            for _ in raw["images"]:
                rng.choice(users)["content"] += " <image>"
        row = normalise_row(raw, "messages")
        media = render_multimodal(processor, tokenizer, row, settings)
        assert all(label == -100 for token, label in zip(media.input_ids, media.labels, strict=True)
                   if token in vision_ids), index
        text_only = render_with_mask(tokenizer, {k: v for k, v in row.items() if k != "images"})
        runs = trained_runs(media.labels)
        got = [tokenizer.decode(media.input_ids[a:b], skip_special_tokens=False) for a, b in runs]
        assert got == trained_texts(text_only, tokenizer), index
