"""HumanEval and CHAMP load offline from their PyPI packages as card-style rows that our checkers accept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen35_tune.cards.load import load_card
from qwen35_tune.errors import UserError
from qwen35_tune.eval.code_sandbox import extract_code, run_with_tests
from qwen35_tune.eval.math_answers import answers_equivalent, extract_answer
from qwen35_tune.eval.public_sets import champ_gold, export_public_set, load_eval_rows

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def human_eval():
    return load_eval_rows("human-eval")


@pytest.fixture(scope="module")
def champ():
    return load_eval_rows("champ")


def test_human_eval_rows(human_eval):
    assert len(human_eval) == 164 and len({r["id"] for r in human_eval}) == 164
    first = human_eval[0]
    assert first["id"] == "HumanEval/0"
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    assert "def has_close_elements(" in first["messages"][0]["content"]
    assert first["tests"][-1] == "check(has_close_elements)"


def test_human_eval_reference_solutions_pass_and_wrong_ones_fail(human_eval):
    for row in human_eval[:4]:
        code = extract_code(row["messages"][-1]["content"])
        assert run_with_tests(code, row["tests"], timeout_s=5).verdict == "passed", row["id"]
    stub = "def has_close_elements(numbers, threshold):\n    return False\n"
    assert run_with_tests(stub, human_eval[0]["tests"], timeout_s=5).verdict == "failed"


def test_champ_rows(champ):
    assert len(champ) == 270 and len({r["id"] for r in champ}) == 270
    assert all(r["check"] and r["messages"][-1]["reasoning_content"] for r in champ)
    assert all("\\boxed{}" in r["messages"][0]["content"] for r in champ)
    # The reference turn's boxed answer (nested braces and all) is extracted back and checks against the gold.
    assert all(answers_equivalent(extract_answer(r["messages"][-1]["content"]), r["check"]) for r in champ)
    assert not answers_equivalent("240", next(r for r in champ if r["id"] == "P_Combinatorics_1")["check"])


@pytest.mark.parametrize(("prose", "gold"), [
    ("C(10, 5), or equivalently 252", "252"),
    ("5/14, or approximately 35.7%", "5/14"),
    ("0 is the only possible value", "0"),
    ("100 (i.e., all values)", "100"),
    ("The limit exists and is equal to (a+3b)/2", "(a+3b)/2"),
    ("2 inequalities", "2"),
    ("No integer solutions", "No integer solutions"),  # no bare answer inside: kept, matched as a string
    ("(x=1, y=2) and (x=2, y=1)", "(x=1, y=2) and (x=2, y=1)"),
])
def test_champ_prose_answers_become_bare_golds(prose, gold):
    assert champ_gold(prose) == gold


def test_champ_golds_check_the_way_a_model_answers(champ):
    by_id = {r["id"]: r for r in champ}
    assert by_id["P_Sequence_31"]["answer_text"] == "The only possible value for the limit is 4"
    assert answers_equivalent("4", by_id["P_Sequence_31"]["check"])
    assert answers_equivalent("\\binom{10}{5}", by_id["P_Combinatorics_2"]["check"])
    assert answers_equivalent("1, 19", by_id["P_Number-Theory_36"]["check"])  # "1 and 19"
    assert not answers_equivalent("19", by_id["P_Number-Theory_36"]["check"])  # half the answer is wrong
    assert answers_equivalent("no integer solutions", by_id["P_Number-Theory_7"]["check"])


def test_export_writes_a_valid_card_that_round_trips(tmp_path, human_eval):
    card_path = export_public_set("human-eval", tmp_path)
    card = load_card(card_path)
    assert (card.name, card.format, card.domain, card.license) == ("human_eval", "messages", "code", "mit")
    rows = load_eval_rows(str(card_path))
    assert len(rows) == 164
    assert rows[0]["tests"] == human_eval[0]["tests"] and rows[0]["messages"] == human_eval[0]["messages"]
    lines = (tmp_path / "human_eval.jsonl").read_text().splitlines()
    assert json.loads(lines[7])["id"] == "HumanEval/7"


def test_card_rows_keep_check_and_tests():
    math = load_eval_rows(str(REPO / "data_cards/cot_arithmetic.yaml"))
    assert math[0]["check"] == 80 and math[0]["messages"][-1]["reasoning_content"]
    code = load_eval_rows(str(REPO / "data_cards/python_tasks.yaml"))
    assert code[0]["tests"] == ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]


def test_unknown_source_is_a_user_error():
    with pytest.raises(UserError, match="human-eval or champ"):
        load_eval_rows("gsm8k")
    with pytest.raises(UserError, match="unknown public eval set"):
        export_public_set("gsm8k", "/tmp/never-written")
