"""Image rows on the tiny vision model: packed equals unpacked per-sample loss (per-sample M-RoPE indices, GDN
segments kept apart; micro-batch rows and rows binned by ``data.pack_media``) for image, video and text rows together,
a text-only batch with the ZeRO-3 dummy image keeps its loss, and ``qwen35-tune train`` on a card of generated images
trains with packing (loss falls) and saves the processor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.smoke

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 170, 30), "yellow": (230, 210, 20)}


def _png(path: Path, colour, size=(64, 64)) -> str:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, (255, 255, 255))
    ImageDraw.Draw(image).rectangle([8, 8, size[0] - 8, size[1] - 8], fill=colour)
    image.save(path)
    return str(path)


@pytest.fixture(scope="module")
def rows_and_model(tiny_vision, tmp_path_factory):
    from qwen35_tune.data.build import dataset_columns
    from qwen35_tune.data.render import render_with_mask
    from qwen35_tune.data.render_media import render_multimodal
    from qwen35_tune.models.load import load_model
    from qwen35_tune.models.processor import VisionSettings, load_processor

    tmp = tmp_path_factory.mktemp("vision_rows")
    frames = tmp / "clip"
    frames.mkdir()
    for i, colour in enumerate([*COLOURS.values()] * 2):
        _png(frames / f"{i:02d}.png", colour, (32, 32))
    settings = VisionSettings(min_pixels=32 * 32, max_pixels=96 * 96, fps=1.0, max_frames=4)
    processor = load_processor(str(tiny_vision), settings)
    tok = processor.tokenizer

    def chat(q, a, **media):
        return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], **media}

    rendered = [
        render_multimodal(processor, tok, chat("What colour is <image>?", "Red.",
                                               images=[_png(tmp / "r.png", COLOURS["red"])]), settings),
        render_with_mask(tok, chat("Say hello.", "Hello there, friend.")),
        render_multimodal(processor, tok, chat("<image> or <image>: which is blue?", "The second.",
                                               images=[_png(tmp / "g.png", COLOURS["green"], (96, 64)),
                                                       _png(tmp / "b.png", COLOURS["blue"])]), settings),
        render_multimodal(processor, tok, chat("What happens?", "Colours change.", videos=[str(frames)]), settings),
    ]
    columns, _ = dataset_columns(rendered)
    rows = [{k: columns[k][i] for k in columns} for i in range(len(rendered))]
    model = load_model(str(tiny_vision), "float32")
    model.eval()
    return rows, model, processor, settings


def _sample_losses(model, batch) -> list[float]:
    """Summed next-token loss per sample: per padded row, or per packed segment."""
    import torch

    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
    labels = batch["labels"]
    per_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none"
    )
    if "cu_seq_lens_q" not in batch:
        return per_token.sum(1).tolist()
    cuts = batch["cu_seq_lens_q"].tolist()
    return [per_token[0, max(a - 1, 0) : b - 1].sum().item() for a, b in zip(cuts, cuts[1:], strict=False)]


def test_packed_equals_unpacked_for_image_rows(rows_and_model):
    from qwen35_tune import patches
    from qwen35_tune.train.vision_collator import build_vision_collator

    rows, model, processor, settings = rows_and_model
    assert patches.varlen_kernels_available() or patches.apply_gdn_packed_segments()
    padded = build_vision_collator(processor, processor.tokenizer.pad_token_id, packed=False, settings=settings)
    packed = build_vision_collator(processor, processor.tokenizer.pad_token_id, packed=True, settings=settings)
    packed.bind_model(model)
    alone = [_sample_losses(model, padded([row]))[0] for row in rows]
    together = _sample_losses(model, packed(rows))
    batch = padded(rows)
    assert batch["image_grid_thw"].shape[0] == 3 and batch["video_grid_thw"].shape[0] == 1
    assert all(loss > 1.0 for loss in alone)
    assert together == pytest.approx(alone, abs=1e-5, rel=1e-6)
    assert _sample_losses(model, batch) == pytest.approx(alone, abs=1e-5, rel=1e-6)
    from datasets import Dataset

    from qwen35_tune.data.pack_media import pack_media_rows

    bins = pack_media_rows(Dataset.from_list(rows), target_length=sum(len(r["input_ids"]) for r in rows), seed=0)
    assert len(bins) == 1 and sorted(bins[0]["seq_lengths"]) == sorted(len(r["input_ids"]) for r in rows)
    order = [next(i for i, r in enumerate(rows) if len(r["input_ids"]) == n) for n in bins[0]["seq_lengths"]]
    assert sorted(order) == [0, 1, 2, 3]  # four distinct lengths: the bin's sample order is known
    from_bins = _sample_losses(model, packed([bins[0]]))
    assert from_bins == pytest.approx([alone[i] for i in order], abs=1e-5, rel=1e-6)
    for collate in (padded, packed):  # ZeRO-3/FSDP dummy image: the tower runs, the text row's loss is unchanged
        collate.dummy_image = True
        batch = collate([rows[1]])
        assert "pixel_values" in batch
        assert _sample_losses(model, batch)[0] == pytest.approx(alone[1], abs=1e-5)


def test_vision_tower_gets_no_packed_text_boundaries(rows_and_model, monkeypatch):
    """A packed row's flash-attention boundaries describe the text, not the images: transformers keeps them out of the
    vision tower (``accepts_precomputed_kwargs``), so packing needs no patch there. If this fails, the tower would
    get the wrong boundaries (and a duplicate ``cu_seq_lens_q`` under flash-attention): drop them before it."""
    import transformers.models.qwen3_5.modeling_qwen3_5 as qwen

    from qwen35_tune import patches
    from qwen35_tune.train.vision_collator import build_vision_collator

    rows, model, processor, settings = rows_and_model
    assert patches.varlen_kernels_available() or patches.apply_gdn_packed_segments()
    collate = build_vision_collator(processor, processor.tokenizer.pad_token_id, packed=True, settings=settings)
    collate.bind_model(model)
    batch = {k: v for k, v in collate(rows[:3]).items() if k != "labels"}
    upstream, seen = qwen.Qwen3_5VisionModel.forward, []

    def spy(self, *args, **kwargs):
        seen.append(set(kwargs))
        return upstream(self, *args, **kwargs)

    monkeypatch.setattr(qwen.Qwen3_5VisionModel, "forward", spy)
    with torch.no_grad():
        model(**batch)
    assert seen and not seen[-1] & {"cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k"}, seen


def test_train_on_image_rows_loss_falls_and_processor_is_saved(tmp_path):
    from qwen35_tune.cli import main

    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i in range(16):
        name, colour = list(COLOURS.items())[i % 4]
        file = _png(images / f"{i:02d}.png", colour)
        rows.append({"messages": [{"role": "user", "content": "What colour is the square?"},
                                  {"role": "assistant", "content": name}], "images": [Path(file).name]})
    (tmp_path / "colours.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "colours.yaml").write_text(
        "name: colours\nlicense: mit\nsource: {path: colours.jsonl}\nmedia_dir: images\nmax_bad_fraction: 0\n"
    )
    (tmp_path / "recipe.yaml").write_text(
        "name: colours\nmodel:\n  name_or_path: tiny://vision\n  dtype: float32\n"
        "  vision: {min_pixels: 4096, max_pixels: 4096}\n"
        "data: {cards: [{path: colours.yaml}]}\n"
        "train: {max_steps: 8, per_device_train_batch_size: 4, learning_rate: 5.0e-3, lr_scheduler_type: constant,"
        " logging_steps: 1, max_length: 128, packing: true}\n"
    )
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "recipe.yaml"), "--output-dir", str(run)]) == 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) == 8 and sum(losses[-2:]) < 0.7 * sum(losses[:2]), losses
    stats = json.loads((run / "data_stats.json").read_text())
    assert stats["train_rows"] == 16 and stats["cards"][0]["duplicate"] == 0  # same question, other image
    saved = {p.name for p in (run / "adapter").iterdir()}
    assert "processor_config.json" in saved or "preprocessor_config.json" in saved, saved
    assert "chat_template.jinja" in saved or "tokenizer_config.json" in saved


def test_pixels_made_at_collation_equal_the_rendered_ones(rows_and_model, tmp_path):
    """The dataset stores media references, not pixels; the collator's pixels must be the ones the render saw."""
    import numpy as np

    from qwen35_tune.data.build import dataset_columns
    from qwen35_tune.data.render_media import PixelLoader, render_multimodal

    _, _, processor, settings = rows_and_model
    frames = tmp_path / "clip"
    frames.mkdir()
    for i, colour in enumerate(COLOURS.values()):
        _png(frames / f"{i:02d}.png", colour, (48, 32))
    row = {"messages": [{"role": "user", "content": "<image> then <video>?"}, {"role": "assistant", "content": "Ok."}],
           "images": [_png(tmp_path / "g.png", COLOURS["green"], (80, 48))], "videos": [str(frames)]}
    rendered = render_multimodal(processor, processor.tokenizer, row, settings)
    columns, features = dataset_columns([rendered])
    assert "pixel_values" not in columns and columns["image_refs"] == [row["images"]]  # nothing heavy stored
    loaded = PixelLoader(processor, settings)(columns["image_refs"][0], columns["video_refs"][0])
    for key in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw"):
        assert np.array_equal(loaded[key], rendered.media[key]), key
