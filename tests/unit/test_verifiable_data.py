"""Verifiable data cards (``format: verifiable``): rows normalise to a prompt and one answer check, bad rows go to
quarantine with their reason (and count against the card's threshold), prompts are rendered with the checkpoint's
template in the recipe's thinking mode, and the eval replay finds the same held-out prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen35_tune.data.formats import BadRow, normalise_row
from qwen35_tune.errors import UserError
from qwen35_tune.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]


def norm(row: dict, columns: dict | None = None) -> dict:
    return normalise_row(row, "verifiable", columns or {})


@pytest.mark.parametrize(("row", "check"), [
    ({"prompt": "2+2?", "answer": 4}, {"kind": "math", "answer": "4"}),
    ({"prompt": "2+2?", "answer": "\\frac{8}{2}"}, {"kind": "math", "answer": "\\frac{8}{2}"}),
    ({"prompt": "add", "tests": ["assert add(1, 1) == 2"]}, {"kind": "code", "tests": ["assert add(1, 1) == 2"]}),
    ({"prompt": "add", "tests": "assert add(1, 1) == 2\n"}, {"kind": "code", "tests": "assert add(1, 1) == 2\n"}),
    ({"prompt": "Capital?", "choices": ["Lyon", "Paris"], "label": 1},
     {"kind": "choice", "choices": ["Lyon", "Paris"], "label": 1}),
    ({"prompt": "Capital?", "choices": ["Lyon", "Paris"], "label": "B"},
     {"kind": "choice", "choices": ["Lyon", "Paris"], "label": 1}),
    ({"prompt": "Capital?", "choices": ["Lyon", "Paris"], "label": "Paris"},
     {"kind": "choice", "choices": ["Lyon", "Paris"], "label": 1}),
    ({"prompt": "Translate: thanks", "reference": "merci"}, {"kind": "translation", "reference": "merci"}),
])
def test_each_kind_of_check(row, check):
    out = norm(row)
    assert out["check"] == check
    assert out["messages"][-1] == {"role": "user", "content": row["prompt"]}


def test_prompt_as_messages_with_system_and_thinking_flag():
    row = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
           "answer": "4", "enable_thinking": False}
    out = norm(row)
    assert [m["role"] for m in out["messages"]] == ["system", "user"] and out["enable_thinking"] is False
    out = norm({"question": "2+2?", "gold": 4, "system": "Be brief."}, {"prompt": "question", "answer": "gold"})
    assert out["messages"][0] == {"role": "system", "content": "Be brief."} and out["check"]["answer"] == "4"


@pytest.mark.parametrize(("row", "reason"), [
    ({"prompt": "2+2?"}, "nothing to check an answer against"),
    ({"prompt": "2+2?", "answer": None}, "nothing to check an answer against"),
    ({"prompt": "2+2?", "answer": "4", "tests": ["assert True"]}, "checks an answer two ways"),
    ({"prompt": "2+2?", "answer": "  "}, "is empty"),
    ({"prompt": "2+2?", "answer": True}, "must be a number or a string"),
    ({"prompt": "f", "tests": []}, "non-empty list"),
    ({"prompt": "f", "tests": "  "}, "any code would pass"),
    ({"prompt": "f", "tests": ["assert f()", ""]}, "every test must be a non-empty string"),
    ({"prompt": "q", "choices": ["a", "b"]}, "without 'label'"),
    ({"prompt": "q", "label": 1}, "without 'choices'"),
    ({"prompt": "q", "choices": ["a", "b"], "label": 5}, "names none of the 2 choices"),
    ({"prompt": "q", "choices": ["a"], "label": 0}, "two or more"),
    ({"prompt": "q", "choices": ["a", "a"], "label": 0}, "same choice twice"),
    ({"prompt": "q", "reference": ""}, "non-empty string"),
    ({"prompt": "", "answer": "4"}, "nothing to answer"),
    ({"prompt": None, "answer": "4"}, "is null"),
    ({"answer": "4"}, "missing column 'prompt'"),
    ({"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "answer": "4"},
     "must end with a user turn"),
    ({"prompt": "q", "answer": "4", "images": ["a.png"]}, "not supported by the GRPO stage"),
    ({"prompt": "q", "answer": float("nan")}, "not an answer"),
    ({"prompt": "q", "answer": "4", "enable_thinking": "yes"}, "must be true or false"),
])
def test_bad_rows_say_why(row, reason):
    with pytest.raises(BadRow, match=reason):
        norm(row)


# ---- the prompt datasets -----------------------------------------------------------------------------------------

def make_recipe(tmp_path: Path, rows: list[dict], extra: str = "", card_extra: str = "", thinking: str = "true"):
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "card.yaml").write_text("name: checks\nlicense: mit\ndomain: math\nsource: {path: rows.jsonl}\n"
                                        f"format: verifiable\n{card_extra}")
    (tmp_path / "recipe.yaml").write_text(
        f"name: t\nstage: grpo\nmodel: {{name_or_path: 'tiny://dense'}}\n"
        f"data:\n  cards: [{{path: card.yaml{extra}}}]\n"
        f"chat: {{thinking: {thinking}}}\ngrpo: {{max_completion_length: 16}}\ntrain: {{max_length: 64}}\n"
        "rewards: [correct]\n")
    return load_recipe(tmp_path / "recipe.yaml")


ROWS = [{"prompt": f"What is {i} + {i}?", "answer": 2 * i} for i in range(20)]


@pytest.mark.parametrize("thinking", ["true", "false", "null"])
def test_prompts_are_the_template_with_its_generation_prompt(tmp_path, tiny_tokenizer, thinking):
    from qwen35_tune.data.prompt_build import build_prompt_datasets

    rows = [*ROWS[:3], {"prompt": "What is 9 + 9?", "answer": 18, "enable_thinking": False}]
    recipe = make_recipe(tmp_path, rows, thinking=thinking)
    train, _, stats = build_prompt_datasets(recipe, tiny_tokenizer, tmp_path)
    by_text = {row["prompt"]: row for row in train}
    for raw in rows:
        flag = raw.get("enable_thinking", {"true": True, "false": False, "null": None}[thinking])
        kwargs = {} if flag is None else {"enable_thinking": flag}
        expected = tiny_tokenizer.apply_chat_template([{"role": "user", "content": raw["prompt"]}], tokenize=False,
                                                      add_generation_prompt=True, **kwargs)
        assert expected in by_text
        assert json.loads(by_text[expected]["check"]) == {"kind": "math", "answer": str(raw["answer"])}
        assert expected.endswith("<think>\n") == (flag is not False)  # thinking mode opens the block
    assert stats["train_rows"] == 4 and stats["cards"][0]["tokens"] > 0


def test_bad_rows_are_quarantined_counted_and_stop_the_run_past_the_threshold(tmp_path, tiny_tokenizer):
    from qwen35_tune.data.prompt_build import build_prompt_datasets

    rows = [*ROWS, {"prompt": "no check"}, {"prompt": "two", "answer": 1, "reference": "x"}]
    recipe = make_recipe(tmp_path, rows, card_extra="max_bad_fraction: 0.2\n")
    train, _, stats = build_prompt_datasets(recipe, tiny_tokenizer, tmp_path)
    assert len(train) == 20
    card = stats["cards"][0]
    assert card["rows"] == 22 and card["kept"] == 20 and sum(card["bad"].values()) == 2
    quarantined = [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    assert [q["row"] for q in quarantined] == [21, 22]
    assert "nothing to check an answer against" in quarantined[0]["reason"] and quarantined[0]["card"] == "checks"
    strict = make_recipe(tmp_path, rows, card_extra="max_bad_fraction: 0.05\n")
    with pytest.raises(UserError, match=r"data card 'checks': 2 of 22 rows are bad"):
        build_prompt_datasets(strict, tiny_tokenizer, tmp_path)
    assert "error" in json.loads((tmp_path / "data_stats.json").read_text())


def test_prompts_over_the_budget_are_left_out_and_counted(tmp_path, tiny_tokenizer):
    from qwen35_tune.data.prompt_build import build_prompt_datasets

    long = {"prompt": "word " * 200, "answer": 1}
    train, _, stats = build_prompt_datasets(make_recipe(tmp_path, [*ROWS, long]), tiny_tokenizer, tmp_path)
    assert len(train) == 20 and stats["cards"][0]["too_long_dropped"] == 1


def test_duplicate_prompts_are_dropped_and_counted(tmp_path, tiny_tokenizer):
    from qwen35_tune.data.prompt_build import build_prompt_datasets

    train, _, stats = build_prompt_datasets(make_recipe(tmp_path, [*ROWS, ROWS[0]]), tiny_tokenizer, tmp_path)
    assert len(train) == 20 and stats["cards"][0]["duplicate"] == 1


def test_eval_holdout_and_the_eval_replay_agree(tmp_path, tiny_tokenizer):
    """``qwen35-tune eval`` and the recipe's eval suites score the prompts training held out, no other."""
    from qwen35_tune.data.prompt_build import build_prompt_datasets
    from qwen35_tune.eval.rows import held_out_rows

    recipe = make_recipe(tmp_path, [*ROWS, {"prompt": "word " * 200, "answer": 1}], extra=", eval_fraction: 0.25")
    train, held, _ = build_prompt_datasets(recipe, tiny_tokenizer, tmp_path)
    assert len(held) == 5 and not set(held["prompt"]) & set(train["prompt"])
    replayed = held_out_rows(recipe, tiny_tokenizer)["checks"]
    assert sorted(row.origin for row in replayed) == sorted(held["origin"])
    checks = {origin: json.loads(check) for origin, check in zip(held["origin"], held["check"], strict=True)}
    for row in replayed:
        assert row.prompt[-1]["role"] == "user" and row.gold == checks[row.origin]["answer"]


def test_shipped_verifiable_cards_normalise_and_render_every_row(tiny_tokenizer):
    from qwen35_tune.cards import load_card
    from qwen35_tune.data.batch_render import CompiledChat
    from qwen35_tune.data.prompt_build import render_prompt
    from qwen35_tune.data.sources import iter_card_rows

    cards = [load_card(p) for p in sorted((REPO / "data_cards").glob("*.yaml"))]
    verifiable = [c for c in cards if c.format == "verifiable"]
    assert {c.name for c in verifiable} >= {"cot_arithmetic_verifiable", "python_tasks_verifiable", "larger_digit"}
    chat = CompiledChat(tiny_tokenizer)
    for card in verifiable:
        rows = [normalise_row(raw, card.format, card.columns) for _, _, raw in iter_card_rows(card)]
        assert len(rows) >= 10
        assert all(render_prompt(chat, row, True).endswith("<|im_start|>assistant\n<think>\n") for row in rows)
