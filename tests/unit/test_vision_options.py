"""Vision training options checked without a model: per-part learning rates (recipe keys and optimizer groups), and
audio cards refused for Qwen3.5 (no audio tower) with the card's recipe file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen35_tune.errors import UserError
from qwen35_tune.recipe import RecipeError, load_recipe
from qwen35_tune.recipe.vision_checks import audio_encoder_in_config
from qwen35_tune.train.param_groups import build_param_groups, effective_freeze, part_of

REPO = Path(__file__).resolve().parents[2]
TINY_FULL = REPO / "recipes/tiny/vision_full.yaml"
TINY_LORA = REPO / "recipes/tiny/vision_lora.yaml"


def _problems(path, overrides=()) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return [str(p) for p in info.value.problems]


def test_learning_rates_key_is_checked_with_did_you_mean():
    [problem] = _problems(TINY_LORA, ["train.learning_rates.visoin=1e-5"])
    assert "train.learning_rates.visoin: unknown key (did you mean 'vision'?)" in problem
    [problem] = _problems(TINY_LORA, ["train.learning_rates.projector=0"])
    assert "train.learning_rates.projector" in problem and "greater than 0" in problem


def test_lora_rate_for_a_part_without_adapters_is_refused():
    [problem] = _problems(TINY_LORA, ["train.learning_rates.vision=1e-5"])
    assert "train.learning_rates.vision" in problem and "add 'vision' to target_modules" in problem
    recipe = load_recipe(TINY_LORA, ["method.lora.target_modules=[all, vision]", "train.learning_rates.vision=1e-5"])
    assert recipe.train.learning_rates.given() == {"vision": 1e-5}


def test_full_fine_tune_rate_unfreezes_the_default_but_contradicts_an_explicit_freeze():
    assert effective_freeze(load_recipe(TINY_FULL, ["method.freeze=null"])) is None  # default: vision + projector
    recipe = load_recipe(TINY_FULL, ["method.freeze=null", "train.learning_rates.vision=1e-4"])
    assert effective_freeze(recipe) == ["projector"]
    [problem] = _problems(TINY_FULL, ["train.learning_rates.vision=1e-4"])  # the recipe freezes [vision, projector]
    assert "train.learning_rates.vision: method.freeze freezes 'vision'" in problem


class _P:
    """Stands in for a parameter: only requires_grad matters to the grouping."""

    def __init__(self, trainable=True):
        self.requires_grad = trainable


def test_param_groups_split_by_part_and_decay():
    names = {
        "base_model.model.model.visual.blocks.0.attn.qkv.lora_A.default.weight": _P(),
        "base_model.model.model.visual.merger.linear_fc1.lora_A.default.weight": _P(),
        "base_model.model.model.visual.blocks.0.norm1.weight": _P(False),
        "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight": _P(),
        "base_model.model.model.language_model.norm.weight": _P(),
    }
    assert [part_of(n) for n in names] == ["vision", "projector", "vision", "language_model", "language_model"]
    decay = {n for n in names if "norm" not in n}
    groups = build_param_groups(names.items(), {"vision": 1e-5}, decay, 0.1)
    by_lr = {(g.get("lr"), g["weight_decay"]): len(g["params"]) for g in groups}
    # vision adapter at its own rate; projector + LM at the default (no "lr" key), split by decay; frozen left out
    assert by_lr == {(1e-5, 0.1): 1, (None, 0.1): 2, (None, 0.0): 1}


def test_rate_for_an_untrained_part_is_an_error():
    names = {"model.language_model.layers.0.mlp.up_proj.weight": _P(), "model.visual.merger.norm.weight": _P(False)}
    with pytest.raises(UserError, match=r"train.learning_rates.projector: nothing in the projector"):
        build_param_groups(names.items(), {"projector": 1e-5}, set(), 0.0)


def _audio_card(tmp_path: Path, mapped: bool) -> Path:
    rows = tmp_path / "rows.jsonl"
    row = {"messages": [{"role": "user", "content": "Transcribe."}, {"role": "assistant", "content": "hi"}]}
    rows.write_text(json.dumps(row if mapped else {**row, "audios": ["a.wav"]}) + "\n")
    card = tmp_path / "speech.yaml"
    card.write_text("name: speech\nlicense: other\nsource:\n  path: rows.jsonl\n"
                    + ("columns:\n  audios: clip\n" if mapped else ""))
    return card


@pytest.mark.parametrize("mapped", [False, True], ids=["audios-in-rows", "audios-mapped"])
def test_audio_card_on_qwen35_is_a_validation_error_at_its_line(tmp_path, mapped):
    card = _audio_card(tmp_path, mapped)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nmodel:\n  name_or_path: tiny://vision\ndata:\n  cards:\n    - path: {card}\n")
    [problem] = _problems(recipe)
    assert problem.startswith(f"{recipe}:6 data.cards[0].path: card 'speech'")
    assert "'audios' column" in problem and "no audio encoder" in problem


def test_audio_card_is_allowed_for_a_local_model_with_an_audio_encoder(tmp_path):
    card = _audio_card(tmp_path, mapped=False)
    model = tmp_path / "omni"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "some_omni", "audio_config": {"d_model": 8}}))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nmodel:\n  name_or_path: {model}\ndata:\n  cards:\n    - path: {card}\n")
    assert load_recipe(recipe).model.name_or_path == str(model)
    assert not audio_encoder_in_config({"model_type": "qwen3_5", "vision_config": {}})
