"""A tiny vision LoRA run (recipes/tiny/vision_lora.yaml, shape-QA image rows) merges into a complete VL checkpoint:
it loads with AutoModelForImageTextToText + AutoProcessor, carries processor, tokenizer and chat template, keeps
every vision tensor byte-identical, and reproduces the adapter model's logits on an image prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen35_tune.cli import main
from tests.smoke.export_kit import load_tensors

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes/tiny/vision_lora.yaml"
IMAGE = REPO / "data_cards/data/shapes_qa/eval_0003.png"

pytestmark = pytest.mark.smoke


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vision-lora")
    assert main(["train", str(RECIPE), "--output-dir", str(out), "train.max_steps=6", "train.logging_steps=1"]) == 0
    return out


def test_merged_folder_is_a_complete_vl_checkpoint(run_dir):
    from transformers import AutoProcessor

    merged = run_dir / "merged"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (merged / name).is_file(), name
    processor_files = {p.name for p in merged.glob("*.json")} & {"processor_config.json", "preprocessor_config.json"}
    assert processor_files, "no processor files next to the weights"
    processor = AutoProcessor.from_pretrained(merged)
    assert processor.image_processor.patch_size == 16 and list(processor.image_processor.image_mean) == [0.5] * 3
    assert getattr(processor, "video_processor", None) is not None, "video processor missing"
    assert processor.video_processor.patch_size == 16
    trained_template = (run_dir / "adapter" / "chat_template.jinja").read_text()
    assert (merged / "chat_template.jinja").read_text() == trained_template
    assert json.loads((run_dir / "merged_verify.json").read_text())["image_prompt"] is True


def test_every_vision_tensor_is_byte_identical_to_the_base(run_dir):
    import torch

    base_path = Path(json.loads((run_dir / "run.json").read_text())["base_path"])
    base, merged = load_tensors(base_path), load_tensors(run_dir / "merged")
    assert set(base) == set(merged)
    vision = [k for k in base if ".visual." in k or k.startswith("visual.")]
    assert len(vision) > 20
    for key in vision:
        a, b = base[key], merged[key]
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.reshape(-1).view(torch.uint8).equal(b.reshape(-1).view(torch.uint8)), key
    assert any(not base[k].equal(merged[k]) for k in base if "language_model" in k), "LoRA changed nothing"


def test_merged_model_reproduces_adapter_logits_on_an_image_prompt(run_dir):
    import torch
    from peft import PeftModel
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    merged_dir = run_dir / "merged"
    base_path = json.loads((run_dir / "run.json").read_text())["base_path"]
    processor = AutoProcessor.from_pretrained(merged_dir)
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the square?"}]}]
    text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[Image.open(IMAGE).convert("RGB")], return_tensors="pt",
                       return_mm_token_type_ids=True)
    assert inputs["pixel_values"].numel() and (inputs["mm_token_type_ids"] == 1).any()
    base = AutoModelForImageTextToText.from_pretrained(base_path, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base(**inputs).logits
        adapter = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
        adapter_logits = adapter(**inputs).logits
        merged = AutoModelForImageTextToText.from_pretrained(merged_dir, dtype=torch.float32).eval()
        merged_logits = merged(**inputs).logits
        blank = processor(text=[text], images=[Image.new("RGB", (64, 64), "white")], return_tensors="pt",
                          return_mm_token_type_ids=True)
        blank_logits = merged(**blank).logits
    assert type(merged).__name__ == "Qwen3_5ForConditionalGeneration"
    assert (adapter_logits - base_logits).abs().max() > 1e-3, "the adapter should change the logits"
    assert (merged_logits - adapter_logits).abs().max() < 1e-4
    assert (merged_logits - blank_logits).abs().max() > 1e-4, "the image should reach the language model"
