"""Decontamination against named eval cards only (data.decontaminate.against), with the count in the stats."""

from __future__ import annotations

import pytest

from qwen35_tune.data.build import build_datasets
from qwen35_tune.errors import UserError
from tests.unit.data_kit import chat_row, write_card, write_recipe

EVAL_A = [chat_row("Name the capital of France and one famous museum in it", "Paris; the Louvre.")]
EVAL_B = [chat_row("How many legs does a spider have in total", "Eight.")]
TRAIN = [
    chat_row("Name the capital of France and one famous museum in it please", "Paris; the Louvre."),  # overlaps A
    chat_row("How many legs does a spider have in total", "Eight legs."),  # overlaps B
    chat_row("What colour is the sky on a clear day at noon", "Blue."),
]


@pytest.fixture
def data(tmp_path):
    write_card(tmp_path, "ev_a", EVAL_A)
    write_card(tmp_path, "ev_b", EVAL_B)
    write_card(tmp_path, "tr", TRAIN)
    return "  cards: [{path: tr.yaml}]\n  eval_cards: [{path: ev_a.yaml}, {path: ev_b.yaml}]\n"


@pytest.mark.parametrize(("against", "dropped"), [(None, 2), (["ev_a"], 1), (["ev_b.yaml"], 1), ([], 0)])
def test_only_named_eval_cards_decontaminate(tmp_path, tiny_tokenizer, data, against, dropped):
    decon = "{ngram: 4}" if against is None else f"{{ngram: 4, against: {against}}}"
    train, evals, stats = build_datasets(write_recipe(tmp_path, data + f"  decontaminate: {decon}"), tiny_tokenizer)
    assert len(train) == 3 - dropped and len(evals) == 2
    assert stats["decontamination"]["dropped"] == dropped
    assert {c["name"]: c["contaminated"] for c in stats["cards"]}["tr"] == dropped


def test_unknown_eval_card_name_is_a_user_error(tmp_path, tiny_tokenizer, data):
    recipe = write_recipe(tmp_path, data + "  decontaminate: {against: [nope]}")
    with pytest.raises(UserError, match=r"data.decontaminate.against: 'nope' is not one of data.eval_cards \(ev_a"):
        build_datasets(recipe, tiny_tokenizer)
