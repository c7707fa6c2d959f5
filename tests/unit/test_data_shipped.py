"""Every shipped data card loads, renders with the project's Qwen3.5 template without a single bad row, and the
generated samples are what their cards claim (verifiable answers, runnable Python tests)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from qwen35_tune.cards import load_card
from qwen35_tune.data.formats import normalise_row
from qwen35_tune.data.render import render_with_mask
from qwen35_tune.data.sources import iter_card_rows

REPO = Path(__file__).resolve().parents[2]
CARDS = sorted((REPO / "data_cards").glob("*.yaml"))
# format: verifiable cards hold prompts without answers to train (stage: grpo): test_verifiable_data.py renders them
SFT_CARDS = [path for path in CARDS if "\nformat: verifiable" not in path.read_text()]


@pytest.mark.parametrize("path", SFT_CARDS, ids=lambda p: p.stem)
def test_shipped_card_renders_every_row(path, tiny_tokenizer):
    card = load_card(path)
    n = 0
    for _, _, raw in iter_card_rows(card):
        row = render_with_mask(tiny_tokenizer, normalise_row(raw, card.format, card.columns))
        assert row.n_trained > 0
        n += 1
    assert n >= 10


def test_cot_answers_are_verifiable():
    rows = [json.loads(line) for line in (REPO / "data_cards/data/cot_arithmetic.jsonl").read_text().splitlines()]
    for row in rows:
        numbers = [int(tok) for tok in re.findall(r"\d+", row["question"])]
        start, gave, boxes, per_box = numbers
        assert row["check"] == start - gave + boxes * per_box
        assert row["answer"].endswith(f"The answer is {row['check']}.")


def test_python_task_solutions_pass_their_tests():
    rows = [json.loads(line) for line in (REPO / "data_cards/data/python_tasks.jsonl").read_text().splitlines()]
    for row in rows:
        code = row["messages"][-1]["content"].removeprefix("```python\n").removesuffix("\n```")
        scope: dict = {}
        exec(code, scope)  # noqa: S102  (our own generated reference solutions)
        for test in row["tests"]:
            exec(test, scope)  # noqa: S102
