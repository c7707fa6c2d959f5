"""Preference rows (``format: preference``): the public layouts map to one pair, bad pairs are quarantined with their
reason, and each answer is rendered exactly as SFT renders that final assistant turn (same ids, same trained span),
with the prompt never among the scored tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen35_tune.data.bad_row import BadRow
from qwen35_tune.data.preference import normalise_preference, pair_rows
from qwen35_tune.data.preference_build import PreferenceRow, split_pair
from qwen35_tune.data.render import render_with_mask, trained_runs

REPO = Path(__file__).resolve().parents[2]
Q = "What is 2 + 3?"
GOOD, BAD = "2 + 3 = 5.", "2 + 3 = 6."


def user(text):
    return {"role": "user", "content": text}


def bot(text, **extra):
    return {"role": "assistant", "content": text, **extra}


# ---- layouts ---------------------------------------------------------------------------------------------------


def test_plain_strings_with_a_system_column():
    pair = normalise_preference({"prompt": Q, "chosen": GOOD, "rejected": BAD, "system": "Be brief."})
    assert pair["prompt"] == [{"role": "system", "content": "Be brief."}, user(Q)]
    assert pair["chosen"] == bot(GOOD) and pair["rejected"] == bot(BAD)


def test_trl_conversational_layout_and_column_mapping():
    row = {"q": [user(Q)], "good": [bot(GOOD)], "bad": [bot(BAD)]}
    pair = normalise_preference(row, {"prompt": "q", "chosen": "good", "rejected": "bad"})
    assert pair["prompt"] == [user(Q)] and pair["chosen"] == bot(GOOD) and pair["rejected"] == bot(BAD)


def test_ultrafeedback_whole_conversations_share_the_prompt():
    history = [user("Hi"), bot("Hello."), user(Q)]
    row = {"prompt": Q, "chosen": [*history, bot(GOOD)], "rejected": [*history, bot(BAD)], "score_chosen": 8.0}
    pair = normalise_preference(row)
    assert pair["prompt"] == history and pair["chosen"] == bot(GOOD) and pair["rejected"] == bot(BAD)


def test_anthropic_hh_transcripts_are_split_into_turns():
    shared = "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: " + Q
    pair = normalise_preference({"chosen": shared + "\n\nAssistant: " + GOOD,
                                 "rejected": shared + "\n\nAssistant: " + BAD})
    assert pair["prompt"] == [user("Hi"), bot("Hello."), user(Q)]
    assert pair["chosen"] == bot(GOOD) and pair["rejected"] == bot(BAD)


def test_reasoning_inline_or_as_a_field_is_kept_like_sft():
    pair = normalise_preference({"prompt": Q, "chosen": "<think>\n2 and 3 make 5\n</think>\n\n" + GOOD,
                                 "rejected": [bot(BAD, reasoning_content="2 and 3 make 6")]})
    assert pair["chosen"] == bot(GOOD, reasoning_content="2 and 3 make 5")
    assert pair["rejected"]["reasoning_content"] == "2 and 3 make 6"


@pytest.mark.parametrize("row, reason", [
    ({"prompt": Q, "chosen": GOOD, "rejected": GOOD}, "chosen and rejected are the same answer"),
    ({"prompt": Q, "chosen": GOOD, "rejected": "  2 + 3   = 5. "}, "chosen and rejected are the same answer"),
    ({"prompt": Q, "chosen": "", "rejected": BAD}, "'chosen' is empty"),
    ({"prompt": Q, "chosen": GOOD}, "missing column 'rejected'"),
    ({"chosen": GOOD, "rejected": BAD}, "missing column 'prompt'"),
    ({"prompt": "  ", "chosen": GOOD, "rejected": BAD}, "'prompt' is empty"),
    ({"prompt": None, "chosen": GOOD, "rejected": BAD}, "'prompt' is null"),
    ({"prompt": Q, "chosen": 5, "rejected": BAD}, "'chosen' must be text or a list of messages, not int"),
    ({"prompt": Q, "chosen": [bot(GOOD), bot(GOOD)], "rejected": BAD}, "holds 2 assistant messages"),
    ({"prompt": [user(Q), bot("?")], "chosen": GOOD, "rejected": BAD}, "the prompt must end with a user"),
    ({"chosen": [user("a"), bot(GOOD)], "rejected": [user("b"), bot(BAD)]}, "differ from message 0 on"),
    ({"prompt": Q, "chosen": [user(GOOD)], "rejected": BAD}, "must be the same conversation"),
    ({"prompt": Q, "chosen": GOOD, "rejected": BAD, "enable_thinking": "yes"}, "must be true or false"),
])
def test_bad_pairs_say_why(row, reason):
    with pytest.raises(BadRow, match=reason.replace("(", r"\(").replace("?", r"\?")):
        normalise_preference(row)


# ---- one renderer ----------------------------------------------------------------------------------------------


def _render_pair(tokenizer, pair, **options):
    chosen, rejected = pair_rows(pair)
    kwargs = {"train_on": "final_turn_only", **options}
    return split_pair(render_with_mask(tokenizer, chosen, **kwargs), render_with_mask(tokenizer, rejected, **kwargs))


def _sft_answer(tokenizer, conversation, **options) -> tuple[list[int], list[int]]:
    """(ids before the final turn's trained span, that span) as SFT (assistant_only) renders the conversation."""
    row = render_with_mask(tokenizer, conversation, train_on="assistant_only", **options)
    start, end = trained_runs(row.labels)[-1]
    return row.input_ids[:start], row.input_ids[start:end]


PAIRS = {
    "one turn": {"prompt": [user(Q)], "chosen": bot(GOOD), "rejected": bot(BAD)},
    "multi turn": {"prompt": [{"role": "system", "content": "Be brief."}, user("Hi"), bot("Hello."), user(Q)],
                   "chosen": bot(GOOD), "rejected": bot("No idea.")},
    "both reason": {"prompt": [user(Q)], "chosen": bot(GOOD, reasoning_content="2 and 3 make 5"),
                    "rejected": bot(BAD, reasoning_content="2 and 3 make 6")},
}


@pytest.mark.parametrize("thinking", [None, True, False])
@pytest.mark.parametrize("name", PAIRS)
def test_each_answer_is_the_sft_render_of_that_final_turn(tiny_tokenizer, name, thinking):
    pair = PAIRS[name]
    row = _render_pair(tiny_tokenizer, pair, enable_thinking=thinking)
    for conversation, answer in zip(pair_rows(pair), (row.chosen_ids, row.rejected_ids), strict=True):
        prompt, trained = _sft_answer(tiny_tokenizer, conversation, enable_thinking=thinking)
        assert row.prompt_ids == prompt  # the prompt: every token before the turn SFT trains, never scored
        assert answer == trained  # the scored tokens: exactly those SFT trains for that turn
    assert tiny_tokenizer.decode(row.chosen_ids).endswith("<|im_end|>")


def test_where_the_renders_part_before_the_answer_the_rest_belongs_to_the_answer(tiny_tokenizer):
    """One answer reasons and the other does not: the template writes an empty think block before the second; the
    prompt is what both share, and the block is part of the answer that has it (scored, as the choice not to think)."""
    pair = {"prompt": [user(Q)], "chosen": bot(GOOD, reasoning_content="2 and 3 make 5"), "rejected": bot(BAD)}
    row = _render_pair(tiny_tokenizer, pair, enable_thinking=True)
    full_c, full_r = (render_with_mask(tiny_tokenizer, c, enable_thinking=True).input_ids for c in pair_rows(pair))
    assert full_c[: len(row.prompt_ids)] == full_r[: len(row.prompt_ids)] == row.prompt_ids
    assert "</think>" in tiny_tokenizer.decode(row.rejected_ids)  # its empty think block is in its answer
    assert row.prompt_ids + row.chosen_ids == full_c[: len(row.prompt_ids) + len(row.chosen_ids)]


def test_answers_that_render_the_same_are_refused(tiny_tokenizer):
    """Thinking off drops the reasoning, and two answers differing only there become one."""
    pair = {"prompt": [user(Q)], "chosen": bot(GOOD, reasoning_content="a"),
            "rejected": bot(GOOD, reasoning_content="b")}
    _render_pair(tiny_tokenizer, pair, enable_thinking=True)  # different with their reasoning
    with pytest.raises(BadRow, match="render to the same tokens"):
        _render_pair(tiny_tokenizer, pair, enable_thinking=False)


# ---- the card build --------------------------------------------------------------------------------------------


def _recipe(tmp_path: Path, rows: list[dict], **train) -> Path:
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "card.yaml").write_text("name: pairs\nlicense: mit\nsource:\n  path: pairs.jsonl\nformat: preference\n"
                                        "max_bad_fraction: 0.2\n")
    extra = "".join(f"  {k}: {v}\n" for k, v in train.items())
    (tmp_path / "recipe.yaml").write_text(f"name: t\nstage: dpo\nmodel:\n  name_or_path: tiny://dense\ndata:\n"
                                          f"  cards:\n    - path: card.yaml\ntrain:\n{extra or '  max_length: 512'}\n")
    return tmp_path / "recipe.yaml"


def _build(recipe_path: Path, tokenizer, run_dir: Path | None = None):
    from qwen35_tune.data.build import build_datasets
    from qwen35_tune.data.preference_build import preference_columns, render_preference_card
    from qwen35_tune.recipe import load_recipe

    return build_datasets(load_recipe(recipe_path), tokenizer, run_dir, render=render_preference_card,
                          to_columns=preference_columns)


def test_bad_pairs_are_quarantined_counted_and_stop_the_run_past_the_threshold(tmp_path, tiny_tokenizer):
    from qwen35_tune.errors import UserError

    good = [{"prompt": f"What is {i} + 1?", "chosen": f"{i + 1}.", "rejected": f"{i + 2}."} for i in range(9)]
    same = {"prompt": Q, "chosen": GOOD, "rejected": GOOD}
    train, _, stats = _build(_recipe(tmp_path, [*good[:4], same, *good[4:]]), tiny_tokenizer, tmp_path)
    assert len(train) == 9 and train.column_names == ["prompt_ids", "chosen_ids", "rejected_ids"]
    card = stats["cards"][0]
    assert card["bad"] == {"chosen and rejected are the same answer": 1}  # reasons grouped as data stats shows them
    [record] = [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    assert record["row"] == 5 and record["raw"] == same and "same answer" in record["reason"]
    with pytest.raises(UserError, match=r"data card 'pairs': 3 of 5 rows are bad"):
        _build(_recipe(tmp_path, [*good[:2], same, same, same]), tiny_tokenizer, tmp_path)


def test_pairs_over_max_length_are_cut_at_the_answer_end_or_dropped(tmp_path, tiny_tokenizer):
    rows = [{"prompt": Q, "chosen": GOOD + " " + "very " * 40, "rejected": BAD}]
    full = _build(_recipe(tmp_path, rows, max_length=512), tiny_tokenizer)[0][0]
    cut, _, stats = _build(_recipe(tmp_path, rows, max_length=40), tiny_tokenizer)
    row = PreferenceRow(**cut[0])
    assert row.prompt_ids == full["prompt_ids"] and len(row.prompt_ids) + len(row.chosen_ids) == 40
    assert row.chosen_ids == full["chosen_ids"][: len(row.chosen_ids)] and row.rejected_ids == full["rejected_ids"]
    assert stats["cards"][0]["truncated"] == 1
    (tmp_path / "recipe.yaml").write_text((tmp_path / "recipe.yaml").read_text().replace("data:\n",
                                                                                          "data:\n  too_long: drop\n"))
    from qwen35_tune.errors import UserError

    with pytest.raises(UserError, match="no training rows left"):
        _build(tmp_path / "recipe.yaml", tiny_tokenizer)


def test_every_shipped_preference_card_builds_without_a_bad_pair(tmp_path, tiny_tokenizer):
    cards = [p for p in sorted((REPO / "data_cards").glob("*.yaml")) if "format: preference" in p.read_text()]
    assert {p.stem for p in cards} >= {"cot_arithmetic_preference", "shapes_qa_preference"}
    for card in cards:
        if "media_dir" in card.read_text():
            continue  # rows with images need the vision processor: the tiny vision recipe trains on them
        recipe = tmp_path / f"{card.stem}.yaml"
        recipe.write_text(f"name: t\nstage: dpo\nmodel:\n  name_or_path: tiny://dense\ndata:\n  cards:\n"
                          f"    - path: {card}\n")
        train, _, stats = _build(recipe, tiny_tokenizer)
        assert stats["cards"][0]["bad"] == {} and len(train) == stats["cards"][0]["rows"] >= 100
