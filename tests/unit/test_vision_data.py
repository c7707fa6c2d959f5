"""The vision data path without a forward pass: processor settings and the bare-tokenizer trap, media resolution,
placeholders, masks on image rows (vision tokens and prompt -100), quarantine of bad media rows, and collation of
batches that mix text-only and image rows."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from qwen35_tune.data.formats import BadRow
from qwen35_tune.data.media import open_image, open_video, resolve_ref
from qwen35_tune.data.render_media import place_media
from qwen35_tune.errors import UserError
from qwen35_tune.recipe import load_recipe

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 180, 30)}


def _png(path: Path, colour=(220, 30, 30), size=(64, 64)) -> Path:
    from PIL import Image

    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture(scope="module")
def processor(tiny_vision):
    from qwen35_tune.models.processor import VisionSettings, load_processor

    return load_processor(str(tiny_vision), VisionSettings(min_pixels=64 * 64, max_pixels=128 * 128))


def test_vision_budgets_are_validated(tmp_path):
    (tmp_path / "c.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "a"},
                                                              {"role": "assistant", "content": "b"}]}) + "\n")
    (tmp_path / "c.yaml").write_text("name: c\nlicense: mit\nsource: {path: c.jsonl}\n")
    (tmp_path / "r.yaml").write_text("name: r\nmodel:\n  name_or_path: tiny://vision\n  vision: {min_pixels: 9000, "
                                     "max_pixels: 4096}\ndata: {cards: [{path: c.yaml}]}\n")
    with pytest.raises(UserError, match=r"model\.vision\.min_pixels.*must not exceed max_pixels"):
        load_recipe(tmp_path / "r.yaml")
    recipe = load_recipe(tmp_path / "r.yaml", ["model.vision.min_pixels=1024", "model.vision.fps=1.5"])
    vision = recipe.model.vision
    assert (vision.min_pixels, vision.max_pixels, vision.fps) == (1024, 4096, 1.5)


def test_bare_tokenizer_from_autoprocessor_is_refused(monkeypatch, tiny_tokenizer):
    import transformers

    from qwen35_tune.models.processor import load_processor

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", lambda *a, **k: tiny_tokenizer)
    with pytest.raises(UserError, match=r"bare tokenizer.*torchvision==0\.29\.1"):
        load_processor("some/checkpoint")


def test_processor_gets_qwen35_settings_and_budgets(processor):
    from PIL import Image

    for part in (processor.image_processor, processor.video_processor):
        assert part.patch_size == 16 and part.merge_size == 2
        assert list(part.image_mean) == [0.5] * 3 and list(part.image_std) == [0.5] * 3
    grid = processor.image_processor(images=[Image.new("RGB", (640, 480))], return_tensors="pt")["image_grid_thw"]
    t, h, w = grid[0].tolist()
    assert t == 1 and h * w * 16 * 16 <= 128 * 128  # downscaled under max_pixels
    grid = processor.image_processor(images=[Image.new("RGB", (32, 32))], return_tensors="pt")["image_grid_thw"]
    assert grid[0, 1] * grid[0, 2] * 16 * 16 >= 64 * 64  # upscaled to min_pixels


def test_media_references_resolve_or_explain(tmp_path):
    good = _png(tmp_path / "ok.png")
    assert resolve_ref("ok.png", "image", tmp_path) == str(good)
    with pytest.raises(BadRow, match="is a URL; training runs offline"):
        resolve_ref("https://example.com/cat.png", "image", tmp_path)
    with pytest.raises(BadRow, match=r"missing image 'nope\.png'"):
        resolve_ref("nope.png", "image", tmp_path)
    inline = "data:image/png;base64," + base64.b64encode(good.read_bytes()).decode()
    assert resolve_ref(inline, "image", tmp_path) == inline
    assert open_image(inline).size == (64, 64)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(BadRow, match=r"unreadable image 'broken\.png'"):
        open_image(str(tmp_path / "broken.png"))
    with pytest.raises(BadRow, match="invalid base64"):
        open_image("data:image/png;base64,@@@")


def test_frame_folder_is_sampled_by_fps_and_max_frames(tmp_path):
    frames = tmp_path / "clip"
    frames.mkdir()
    for i in range(10):
        _png(frames / f"{i:03d}.png", (i * 20, 0, 0), (32, 32))
    video = open_video(str(frames), fps=1.0, max_frames=4)  # 10 frames at 1 fps = 10 s -> capped at 4 frames
    assert video.frames.shape == (4, 32, 32, 3) and video.indices == (0, 2, 5, 7) and video.total_frames == 10
    assert [int(f[0, 0, 0]) for f in video.frames] == [0, 40, 100, 140]  # the frames named by the indices


def test_placeholders_place_media_in_order_or_prepend():
    msgs = [{"role": "user", "content": "A <image> then <image>?"}, {"role": "assistant", "content": "yes"}]
    placed = place_media(msgs, 2, 0)[0]["content"]
    assert [p["type"] for p in placed] == ["text", "image", "text", "image", "text"]
    with pytest.raises(BadRow, match="3 images for 2 <image> placeholders"):
        place_media(msgs, 3, 0)
    plain = [{"role": "system", "content": "s"}, {"role": "user", "content": "Q"},
             {"role": "assistant", "content": "A"}]
    placed = place_media(plain, 2, 1)
    assert placed[0] == plain[0]
    assert [p.get("type") for p in placed[1]["content"]] == ["image", "image", "video", "text"]


def test_image_row_masks_train_only_the_answer(processor, tmp_path):
    from qwen35_tune.data.render import trained_texts
    from qwen35_tune.data.render_media import render_multimodal
    from qwen35_tune.models.processor import VisionSettings

    row = {"messages": [{"role": "user", "content": "Colour of <image> and <image>?"},
                        {"role": "assistant", "content": "Red and blue."}],
           "images": [str(_png(tmp_path / "r.png")), str(_png(tmp_path / "b.png", COLOURS["blue"], (96, 64)))]}
    out = render_multimodal(processor, processor.tokenizer, row, VisionSettings())
    tok = processor.tokenizer
    assert trained_texts(out, tok) == ["Red and blue.<|im_end|>"]
    grid = out.media["image_grid_thw"]
    n_vision = sum(int(g.prod()) // 4 for g in grid)
    pad = processor.image_token_id
    assert out.input_ids.count(pad) == n_vision == sum(t != 0 for t in out.mm_token_type_ids)
    assert out.media["pixel_values"].shape[0] == sum(int(g.prod()) for g in grid)
    specials = set(tok.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]))
    first_trained = next(i for i, label in enumerate(out.labels) if label != -100)
    for i, (token, label) in enumerate(zip(out.input_ids, out.labels, strict=True)):
        if token in specials or i < first_trained:
            assert label == -100  # every vision token and the whole prompt
        elif label != -100:
            assert label == token


def test_bad_media_rows_are_quarantined_with_reasons(processor, tmp_path):
    from qwen35_tune.data.build import build_datasets

    _png(tmp_path / "red.png")
    _png(tmp_path / "blue.png", COLOURS["blue"])
    (tmp_path / "junk.png").write_bytes(b"definitely not an image")

    def row(q, images):
        return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "Red."}],
                "images": images}

    rows = [row("What colour?", ["red.png"]), row("What colour?", ["blue.png"]),  # same text, other image: kept
            row("What colour?", ["gone.png"]), row("What colour?", ["junk.png"]),
            row("Which <image>?", ["red.png", "blue.png"]), row("What colour?", ["http://x.org/a.png"]),
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "c.yaml").write_text("name: shapes\nlicense: mit\nsource: {path: c.jsonl}\nmax_bad_fraction: 1.0\n")
    (tmp_path / "r.yaml").write_text("name: r\nmodel: {name_or_path: 'tiny://vision'}\ntrain: {max_length: 256}\n"
                                     "data: {cards: [{path: c.yaml}]}\n")
    train, _, stats = build_datasets(load_recipe(tmp_path / "r.yaml"), processor.tokenizer, tmp_path, processor)
    records = [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    assert [r["row"] for r in records] == [3, 4, 5, 6]
    reasons = [r["reason"] for r in records]
    for got, want in zip(reasons, ["missing image 'gone.png'", "unreadable image 'junk.png'",
                                   "2 images for 1 <image> placeholders", "is a URL"], strict=True):
        assert want in got, reasons
    assert len(train) == 3 and stats["cards"][0]["duplicate"] == 0
    assert sorted(len(g) for g in train["image_grid_thw"]) == [0, 1, 1]  # the text row carries empty media


def test_media_rows_on_a_text_model_are_a_user_error(tmp_path, tiny_tokenizer):
    from qwen35_tune.data.build import build_datasets

    _png(tmp_path / "red.png")
    rows = [{"messages": [{"role": "user", "content": "Colour?"}, {"role": "assistant", "content": "Red."}],
             "images": ["red.png"]}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "c.yaml").write_text("name: pics\nlicense: mit\nsource: {path: c.jsonl}\n")
    (tmp_path / "r.yaml").write_text("name: r\nmodel: {name_or_path: 'tiny://dense'}\n"
                                     "data: {cards: [{path: c.yaml}]}\n")
    with pytest.raises(UserError, match="data card 'pics': 1 rows have images or videos, but the model has no vision"):
        build_datasets(load_recipe(tmp_path / "r.yaml"), tiny_tokenizer, None)


def test_collator_mixes_text_and_image_rows_and_feeds_a_dummy_image(processor):
    from qwen35_tune.train.vision_collator import build_vision_collator

    image_row = {"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4], "mm_token_type_ids": [0, 1, 1, 0],
                 "pixel_values": [[0.5] * 1536] * 8, "image_grid_thw": [[1, 2, 4]],
                 "pixel_values_videos": [], "video_grid_thw": []}
    text_row = {"input_ids": [5, 6], "labels": [-100, 6], "mm_token_type_ids": [], "pixel_values": [],
                "image_grid_thw": [], "pixel_values_videos": [], "video_grid_thw": []}
    collate = build_vision_collator(processor, pad_token_id=0, packed=False)
    batch = collate([text_row, image_row, image_row])
    assert batch["input_ids"].shape == (3, 4) and batch["attention_mask"].sum(1).tolist() == [2, 4, 4]
    assert batch["pixel_values"].shape == (16, 1536) and batch["image_grid_thw"].tolist() == [[1, 2, 4]] * 2
    assert batch["labels"][0].tolist() == [-100, 6, -100, -100] and "pixel_values_videos" not in batch
    assert "pixel_values" not in collate([text_row])  # one process: text-only batches skip the tower
    collate.dummy_image = True
    batch = collate([text_row, text_row])
    assert batch["pixel_values"].shape == (4, 1536) and batch["image_grid_thw"].tolist() == [[1, 2, 2]]
    assert batch["input_ids"][0, 2:].tolist() == [collate.vision_start_id, collate.image_token_id,
                                                  collate.vision_end_id]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0]]
    assert (batch["labels"][:, 2:] == -100).all()


def test_video_file_is_decoded_and_sampled(tmp_path):
    av = pytest.importorskip("av")  # the vision extra installs it
    import numpy as np

    with av.open(str(tmp_path / "clip.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(16):  # 4 s at 4 fps, brightness rising
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 15, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    video = open_video(str(tmp_path / "clip.mp4"), fps=1.0, max_frames=8)  # 4 s at 1 fps -> 4 frames
    assert video.frames.shape == (4, 64, 64, 3) and video.fps == 4.0 and video.total_frames == 16
    assert video.indices == (0, 4, 8, 12)
    means = [float(f.mean()) for f in video.frames]
    assert means == sorted(means) and means[-1] - means[0] > 100


def test_video_without_a_decoder_is_a_bad_row(tmp_path, monkeypatch):
    import sys

    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(BadRow, match="no video decoder installed: pip install av"):
        open_video(str(tmp_path / "clip.mp4"), fps=1.0, max_frames=4)


def test_decoded_images_are_stored_as_reopenable_references():
    """A Hub dataset's PIL images are kept as PNG data URIs, which reopen to the same pixels."""
    from PIL import Image

    from qwen35_tune.data.media import open_image
    from qwen35_tune.data.render_media import storable_ref

    image = Image.new("RGB", (20, 12), (10, 200, 30))
    image.putpixel((3, 4), (1, 2, 3))
    ref = storable_ref(image)
    assert ref.startswith("data:image/png;base64,") and storable_ref("/a/b.png") == "/a/b.png"
    assert list(open_image(ref).getdata()) == list(image.getdata())
