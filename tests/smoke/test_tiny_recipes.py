"""Every tiny recipe trains through the CLI entry point; the default run's outputs are checked for what users rely on:
loss falls, the merge keeps untouched tensors byte-identical, and the merged model reproduces the adapter logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen35_tune.cli import main

REPO = Path(__file__).resolve().parents[2]
# stage: grpo twins train in tests/smoke/test_grpo.py (their loss is a policy-gradient surrogate, not one that falls)
TINY_RECIPES = sorted(p for p in (REPO / "recipes" / "tiny").glob("*.yaml") if "\nstage: grpo" not in p.read_text())
DEFAULT = REPO / "recipes" / "tiny" / "sft_lora.yaml"

pytestmark = pytest.mark.smoke


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Train every tiny recipe once (shared by the tests below)."""
    out = {}
    for recipe in TINY_RECIPES:
        run_dir = tmp_path_factory.mktemp(recipe.stem)
        assert main(["train", str(recipe), "--output-dir", str(run_dir)]) == 0, recipe
        out[recipe.stem] = run_dir
    return out


def _losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.parametrize("recipe", TINY_RECIPES, ids=lambda p: p.stem)
def test_tiny_recipe_trains_and_loss_falls(runs, recipe):
    losses = _losses(runs[recipe.stem])
    assert len(losses) >= 4
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < 0.8 * first, f"loss did not fall enough: {losses}"


def test_run_directory_is_complete(runs):
    run_dir = runs[DEFAULT.stem]
    for name in ("recipe.yaml", "data_stats.json", "quarantine.jsonl", "metrics.jsonl", "metrics.png",
                 "summary.json", "run.json", "adapter/adapter_model.safetensors", "adapter/adapter_config.json",
                 "adapter/tokenizer.json", "merged/config.json", "merged/model.safetensors"):
        assert (run_dir / name).exists(), name
    stats = json.loads((run_dir / "data_stats.json").read_text())
    card = stats["cards"][0]
    assert card["name"] == "tiny_chat" and card["rows"] == 96 and card["eval"] > 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_loss"] < summary["first_loss"]


def test_merged_model_reproduces_adapter_logits(runs):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = runs[DEFAULT.stem]
    base_path = json.loads((run_dir / "run.json").read_text())["base_path"]
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "merged")
    messages = [{"role": "user", "content": "How many grams are in 3 kilograms?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "merged", dtype=torch.float32).eval()
    with torch.no_grad():
        expected = adapted(input_ids=ids["input_ids"]).logits
        got = merged(input_ids=ids["input_ids"]).logits
    assert (expected - got).abs().max().item() <= 1e-4
    # and the adapter really changed the model (the comparison above is not between two identical bases)
    with torch.no_grad(), adapted.disable_adapter():
        plain = adapted(input_ids=ids["input_ids"]).logits
    assert (plain - got).abs().max().item() > 1e-3


def test_merge_changes_only_targeted_tensors(runs):
    from safetensors.torch import load_file

    run_dir = runs[DEFAULT.stem]
    base_path = Path(json.loads((run_dir / "run.json").read_text())["base_path"])
    base = load_file(base_path / "model.safetensors")
    merged = load_file(run_dir / "merged" / "model.safetensors")
    assert set(base) == set(merged)
    targeted = ("q_proj", "k_proj", "v_proj", "o_proj", "in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a",
                "out_proj", "gate_proj", "up_proj", "down_proj")
    for key, tensor in base.items():
        assert merged[key].dtype == tensor.dtype, key
        is_target = any(f".{name}.weight" in key for name in targeted)
        if is_target:
            assert not merged[key].equal(tensor), f"{key} was targeted but did not change"
        else:
            assert merged[key].equal(tensor), f"{key} is not a LoRA target but changed"
    assert any("A_log" in k for k in base) and any("linear_attn.norm" in k for k in base)


def test_merged_folder_carries_the_trained_chat_template(runs):
    from transformers import AutoTokenizer

    run_dir = runs[DEFAULT.stem]
    trained = AutoTokenizer.from_pretrained(run_dir / "adapter")
    merged = AutoTokenizer.from_pretrained(run_dir / "merged")
    assert merged.chat_template == trained.chat_template
    assert merged.eos_token == "<|im_end|>"
