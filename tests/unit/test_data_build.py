"""Cards → datasets: bad rows land in quarantine with their reasons, the threshold fails the run, hygiene counts
what it drops (duplicates, eval overlap, over-long rows), and mixture weights give the requested proportions."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest

from qwen35_tune.data.build import build_datasets
from qwen35_tune.data.mixing import mix_by_weight
from qwen35_tune.errors import UserError
from tests.unit.data_kit import chat_row, write_card, write_recipe

FIXTURES = Path(__file__).parent / "fixtures" / "data_build"


def test_bad_rows_are_quarantined_with_reasons(tmp_path, tiny_tokenizer):
    shutil.copytree(FIXTURES, tmp_path / "cards")
    recipe = write_recipe(tmp_path, "  cards: [{path: cards/mixed.yaml}]")
    train, _, stats = build_datasets(recipe, tiny_tokenizer, tmp_path)
    assert len(train) == 20
    records = [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    assert [r["row"] for r in records] == list(range(11, 18))  # 1-based line numbers of the bad rows
    assert {r["card"] for r in records} == {"mixed"}
    reasons = [r["reason"] for r in records]
    for got, want in zip(reasons, ["bad JSON", "unknown role 'bot'", "empty assistant turn",
                                   "no trainable token within train.max_length=64", "missing image 'img/missing.png'",
                                   "system message is not first", "tool call arguments are not valid JSON"],
                         strict=True):
        assert want in got, (want, got)
    card = stats["cards"][0]
    assert card["rows"] == 27 and card["kept"] == 20 and sum(card["bad"].values()) == 7
    assert card["bad"]["missing image"] == 1 and card["bad"]["unknown role"] == 1


def test_bad_fraction_over_threshold_fails_with_a_table(tmp_path, tiny_tokenizer):
    shutil.copytree(FIXTURES, tmp_path / "cards")
    card = tmp_path / "cards" / "mixed.yaml"
    card.write_text(card.read_text().replace("max_bad_fraction: 0.5", "max_bad_fraction: 0.2"))
    recipe = write_recipe(tmp_path, "  cards: [{path: cards/mixed.yaml}]")
    with pytest.raises(UserError) as info:
        build_datasets(recipe, tiny_tokenizer, tmp_path)
    message = str(info.value)
    assert "'mixed': 7 of 27 rows are bad" in message and "max_bad_fraction 20.0%" in message
    assert "bad JSON" in message and "missing image" in message
    assert len((tmp_path / "quarantine.jsonl").read_text().splitlines()) == 7  # written before failing


def test_duplicates_dropped_and_counted(tmp_path, tiny_tokenizer):
    rows = [chat_row("Hi", "Hello."), chat_row("hi ", "hello."), chat_row("Bye", "Goodbye."), chat_row("Hi", "Hello.")]
    write_card(tmp_path, "dups", rows)
    train, _, stats = build_datasets(write_recipe(tmp_path, "  cards: [{path: dups.yaml}]"), tiny_tokenizer)
    assert len(train) == 2 and stats["cards"][0]["duplicate"] == 2
    train, _, stats = build_datasets(
        write_recipe(tmp_path, "  cards: [{path: dups.yaml}]", ["data.dedupe=false"]), tiny_tokenizer
    )
    assert len(train) == 4 and stats["cards"][0]["duplicate"] == 0


def test_decontamination_against_eval_cards(tmp_path, tiny_tokenizer):
    eval_rows = [chat_row("Name the capital of France and one famous museum in it", "Paris; the Louvre.")]
    train_rows = [
        chat_row("Name the capital of France and one famous museum in it please", "Paris; the Louvre."),  # overlap
        chat_row("What colour is the sky on a clear day at noon", "Blue."),
        chat_row("How many legs does a spider have in total", "Eight."),
    ]
    write_card(tmp_path, "ev", eval_rows)
    write_card(tmp_path, "tr", train_rows)
    data = "  cards: [{path: tr.yaml}]\n  eval_cards: [{path: ev.yaml}]\n"
    train, evals, stats = build_datasets(write_recipe(tmp_path, data + "  decontaminate: {ngram: 4}"), tiny_tokenizer)
    assert len(train) == 2 and len(evals) == 1
    assert {c["name"]: c["contaminated"] for c in stats["cards"]} == {"ev": 0, "tr": 1}
    train, _, _ = build_datasets(write_recipe(tmp_path, data), tiny_tokenizer)  # off by default
    assert len(train) == 3


def test_length_policy_truncate_or_drop(tmp_path, tiny_tokenizer):
    write_card(tmp_path, "long", [chat_row("Hi", "word " * 100), chat_row("Hi again", "Short.")])
    train, _, stats = build_datasets(write_recipe(tmp_path, "  cards: [{path: long.yaml}]"), tiny_tokenizer)
    assert len(train) == 2 and stats["cards"][0]["truncated"] == 1
    assert max(len(ids) for ids in train["input_ids"]) == 64
    train, _, stats = build_datasets(
        write_recipe(tmp_path, "  cards: [{path: long.yaml}]", ["data.too_long=drop"]), tiny_tokenizer
    )
    assert len(train) == 1 and stats["cards"][0]["too_long_dropped"] == 1


@pytest.mark.parametrize("weights", [(1.0, 3.0), (2.0, 1.0, 1.0)])
def test_mixture_proportions_deterministic(weights):
    per_card = [[(i, j) for j in range(50 + 30 * i)] for i in range(len(weights))]
    mixed = mix_by_weight(per_card, list(weights), random.Random(0))
    again = mix_by_weight(per_card, list(weights), random.Random(0))
    assert mixed == again  # same seed, same mix (order included)
    counts = Counter(card for card, _ in mixed)
    total = sum(len(rows) for rows in per_card)
    for i, weight in enumerate(weights):
        assert abs(counts[i] / len(mixed) - weight / sum(weights)) <= 0.01
    assert abs(len(mixed) - total) <= len(weights)
    assert mixed != mix_by_weight(per_card, list(weights), random.Random(1))


def test_mixture_through_build_datasets(tmp_path, tiny_tokenizer):
    write_card(tmp_path, "a", [chat_row(f"a{i}", f"A{i}.") for i in range(30)])
    write_card(tmp_path, "b", [chat_row(f"b{i}", f"B{i}.") for i in range(30)])
    data = "  cards: [{path: a.yaml, weight: 1}, {path: b.yaml, weight: 2}]"
    train, _, _ = build_datasets(write_recipe(tmp_path, data), tiny_tokenizer)
    texts = [tiny_tokenizer.decode(ids) for ids in train["input_ids"]]
    assert len(texts) == 60 and sum("user\nb" in t for t in texts) == 40
    again, _, _ = build_datasets(write_recipe(tmp_path, data), tiny_tokenizer)
    assert again["input_ids"] == train["input_ids"]
