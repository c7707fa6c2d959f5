"""A valid recipe loads with paths resolved, cards attached, and a resolved YAML that reads back equal."""

from pathlib import Path

import pytest

from qwen35_tune.cards import DataCard
from qwen35_tune.recipe import CardRef, Recipe, load_recipe

REPO = Path(__file__).resolve().parents[2]

FIXTURES = Path(__file__).parent / "fixtures"
RECIPES = FIXTURES / "recipes"


@pytest.fixture(autouse=True)
def _in_fixtures(monkeypatch):
    monkeypatch.chdir(FIXTURES)


def test_valid_recipe_loads_every_section():
    recipe = load_recipe("recipes/valid.yaml")
    assert isinstance(recipe, Recipe)
    assert recipe.name == "valid-run" and recipe.seed == 7
    assert recipe.model.tiny_kind == "dense"
    assert recipe.method.lora.r == 8 and recipe.method.lora.target_modules == ["q_proj", "v_proj"]
    assert recipe.method.quantization is None
    assert recipe.train.learning_rate == pytest.approx(1e-4)  # YAML 1.2: 1e-4 is a number
    assert recipe.train.extra == {"lr_scheduler_kwargs": {"min_lr": 1e-6}}
    assert recipe.tracking.report_to == ["tensorboard"]
    assert recipe.has_eval_data


def test_card_and_template_paths_resolve_against_the_recipe_file():
    recipe = load_recipe("recipes/valid.yaml")
    assert recipe.data.cards[0].path == str(FIXTURES / "cards" / "chat.yaml")
    assert recipe.chat.template == str(RECIPES / "templates" / "plain.jinja")
    assert recipe.source_files == (RECIPES / "valid.yaml",)


def test_card_pairs_returns_validated_cards():
    recipe = load_recipe("recipes/valid.yaml")
    [(ref, card)] = recipe.card_pairs()
    assert isinstance(ref, CardRef) and ref.weight == 2.0 and ref.eval_fraction == pytest.approx(0.1)
    assert isinstance(card, DataCard) and card.name == "chat"
    assert card.source_paths == [str(FIXTURES / "cards" / "data" / "chat.jsonl")]
    assert card.card_file == FIXTURES / "cards" / "chat.yaml"
    assert [c.name for _, c in recipe.card_pairs("eval")] == ["chat"]


def test_card_pairs_load_cards_for_a_recipe_built_in_code():
    recipe = Recipe.model_validate(
        {"name": "in-code", "model": {"name_or_path": "tiny://moe"}, "data": {"cards": [{"path": "cards/chat.yaml"}]}}
    )
    assert recipe.source_files == ()
    assert recipe.card_pairs()[0][1].name == "chat"


def test_defaults_and_qlora_fills_quantization():
    recipe = load_recipe("recipes/base.yaml", ["method.kind=qlora"])
    assert recipe.method.quantization is not None and recipe.method.quantization.bnb_4bit_quant_type == "nf4"
    assert recipe.train.save_strategy == "no" and recipe.chat.train_on == "assistant_only"
    assert recipe.export.merge is False and recipe.output_dir is None


def test_recipe_is_frozen():
    recipe = load_recipe("recipes/base.yaml")
    with pytest.raises(Exception, match="frozen"):
        recipe.train.learning_rate = 1.0


@pytest.mark.parametrize("name", ["valid.yaml", "grandchild.yaml", "base.yaml"])
def test_to_yaml_round_trips(name, tmp_path):
    recipe = load_recipe(RECIPES / name, ["method.kind=qlora"] if name == "base.yaml" else [])
    text = recipe.to_yaml()
    assert "extends" not in text.split("\n", 2)[-1]
    written = tmp_path / "recipe.yaml"
    written.write_text(text)
    again = load_recipe(written)
    assert again == recipe
    assert again.model_dump() == recipe.model_dump()
    assert again.source_files == (written,)


def test_to_yaml_keeps_strings_that_look_like_other_types(tmp_path):
    recipe = load_recipe("recipes/base.yaml", ["train.extra={hub_model_id: 'no', metric_for_best_model: '1e5'}"])
    written = tmp_path / "recipe.yaml"
    written.write_text(recipe.to_yaml())
    assert load_recipe(written).train.extra == {"hub_model_id": "no", "metric_for_best_model": "1e5"}


@pytest.mark.parametrize(("text", "expected"), [("on", True), ("off", False), ("true", True), ("false", False)])
def test_chat_thinking_is_the_thinking_policy_key(tmp_path, text, expected):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"extends: {REPO / 'recipes/tiny/sft_lora.yaml'}\nchat:\n  thinking: {text}\n")
    loaded = load_recipe(recipe)
    assert loaded.chat.enable_thinking is expected
    assert load_recipe(REPO / "recipes/tiny/sft_lora.yaml", [f"chat.thinking={text}"]).chat.enable_thinking is expected
    assert f"enable_thinking: {str(expected).lower()}" in loaded.to_yaml()  # the resolved recipe spells one name
