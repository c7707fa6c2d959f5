"""A Hub card's eval rows can come from another split of the same dataset (recipe ``data.cards[i].eval_split``).

The Hub id here is a local folder with one file per split: ``datasets.load_dataset`` reads it exactly as it reads a
downloaded Hub dataset, so the test runs offline through the real loading path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen35_tune.data.build import build_datasets
from qwen35_tune.errors import UserError
from qwen35_tune.recipe import load_recipe


def _chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def _hub_card(tmp_path: Path) -> Path:
    folder = tmp_path / "hubdata"
    folder.mkdir()
    splits = {"train": [_chat(f"Train question {i}?", f"Answer {i}.") for i in range(6)],
              "test": [_chat(f"Test question {i}?", f"Result {i}.") for i in range(3)]}
    for split, rows in splits.items():
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    card = tmp_path / "hubcard.yaml"
    card.write_text(f"name: hubcard\nlicense: mit\nsource:\n  hub: {folder}\n  split: train\n"
                    "  data_files: {train: train.jsonl, test: test.jsonl}\n")
    return card


def _recipe(tmp_path: Path, card_ref: str):
    path = tmp_path / "recipe.yaml"
    path.write_text("name: t\nmodel: {name_or_path: 'tiny://dense'}\ntrain: {max_length: 64}\n"
                    f"data:\n  cards: [{card_ref}]\n")
    return load_recipe(path)


def test_eval_split_rows_are_the_other_split(tmp_path, tiny_tokenizer):
    _hub_card(tmp_path)
    recipe = _recipe(tmp_path, "{path: hubcard.yaml, eval_split: test}")
    assert recipe.has_eval_data
    train, evaluation, stats = build_datasets(recipe, tiny_tokenizer, tmp_path)
    assert len(train) == 6 and len(evaluation) == 3
    eval_text = [tiny_tokenizer.decode(ids) for ids in evaluation["input_ids"]]
    assert all("Test question" in t for t in eval_text)
    assert not any("Test question" in tiny_tokenizer.decode(ids) for ids in train["input_ids"])
    by_name = {c["name"]: c for c in stats["cards"]}
    assert by_name["hubcard (split test)"]["eval"] == 3 and by_name["hubcard"]["train"] == 6


def test_eval_split_on_a_local_card_names_the_key(tmp_path):
    (tmp_path / "local.jsonl").write_text(json.dumps(_chat("Hi", "Hello.")) + "\n")
    (tmp_path / "local.yaml").write_text("name: local\nlicense: mit\nsource: {path: local.jsonl}\n")
    with pytest.raises(UserError) as info:
        _recipe(tmp_path, "{path: local.yaml, eval_split: test}")
    assert "recipe.yaml:5 data.cards[0].eval_split" in str(info.value) and "use eval_fraction" in str(info.value)


def test_eval_split_and_eval_fraction_together_is_an_error(tmp_path):
    _hub_card(tmp_path)
    with pytest.raises(UserError) as info:
        _recipe(tmp_path, "{path: hubcard.yaml, eval_split: test, eval_fraction: 0.1}")
    assert "eval_split" in str(info.value) and "not both" in str(info.value)
