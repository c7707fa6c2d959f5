"""Bad rows never crash: random rows of every format, with wrong types wherever a card can put them, either become
canonical conversations that render, or raise BadRow with a reason for the quarantine, never anything else; the
batched renderer agrees with the reference on every one. Plus the row shapes real function-calling sets use."""

from __future__ import annotations

import json
import random
import re

import pytest

from qwen35_tune.data.batch_render import render_batch
from qwen35_tune.data.formats import BadRow, normalise_row
from qwen35_tune.data.render import render_with_mask

FORMATS = ["messages", "sharegpt", "alpaca", "cot", "prompt_completion", "text"]
JUNK = [None, 0, 1.5, True, "", "  ", "hi", [], {}, ["x"], {"a": 1}, [{"type": "text"}], [{"type": "image"}],
        [{"text": 3}], [3], "<think>", "</think>x", "<|im_end|>", "<think>\n\n</think>", "{bad json", "[]"]


def _random_row(rng: random.Random) -> dict:
    def value():
        return rng.choice(JUNK)

    def message():
        if rng.random() < 0.1:
            return value()
        msg = {"role": rng.choice(["user", "assistant", "system", "tool", "bot", None, 3]), "content": value()}
        if rng.random() < 0.3:
            odd_call = {"function": {"name": value(), "arguments": value()}}
            msg["tool_calls"] = rng.choice([value(), [value()], [odd_call], [{"name": "f", "arguments": "{bad"}],
                                            [{"name": "f", "arguments": {}}]])
        if rng.random() < 0.2:
            msg["reasoning_content"] = value()
        return msg

    row = {key: value() for key in ["text", "instruction", "input", "output", "question", "answer", "reasoning",
                                    "prompt", "completion", "system"]}
    for key in ("images", "videos"):  # junk in these makes a bad row, so it comes less often
        row[key] = rng.choice([None, None, value()])
    row["enable_thinking"] = rng.choice([None, True, False, value()])  # junk here is a bad row (not ignored)
    row["messages"] = [message() for _ in range(rng.randint(0, 4))] if rng.random() < 0.9 else value()
    row["conversations"] = [{"from": rng.choice(["human", "gpt", "system", "x"]), "value": value()}
                            for _ in range(rng.randint(0, 3))]
    row["tools"] = rng.choice([None, value(), [{"type": "function", "function": {"name": "f"}}],
                               json.dumps([{"type": "function", "function": {"name": "f"}}])])
    return row


def test_random_rows_are_canonical_or_bad_never_a_crash(tiny_tokenizer):
    rng = random.Random(1)
    canonical, bad = [], 0
    for _ in range(1500):
        row = _random_row(rng)
        fmt = rng.choice(FORMATS)
        try:
            canonical.append(normalise_row(row, fmt))
        except BadRow:
            bad += 1
    rendered = 0
    for row, fast in zip(canonical, render_batch(tiny_tokenizer, canonical), strict=True):
        try:
            want = render_with_mask(tiny_tokenizer, row)
        except BadRow as exc:
            assert isinstance(fast, BadRow) and str(fast) == str(exc)
            continue
        assert not isinstance(fast, BadRow) and (fast.input_ids, fast.labels) == (want.input_ids, want.labels)
        rendered += 1
    assert bad > 500 and rendered > 100  # both outcomes are exercised


@pytest.mark.parametrize(("row", "fmt", "reason"), [
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}, {"role": "assistant", "content": "a"}]},
     "messages", "message 0: content part 0 has a 'text' that is not a string"),
    ({"messages": [{"role": "user", "content": ["hi"]}, {"role": "assistant", "content": "a"}]},
     "messages", "message 0: content part 0 is not an object"),
    ({"prompt": "q", "completion": "a", "images": True}, "prompt_completion", "'images' must be a path or a list"),
    ({"prompt": "q", "completion": "a", "tools": "{bad"}, "prompt_completion", "'tools' is a string but not valid"),
    ({"prompt": "q", "completion": "a", "tools": [1, 2]}, "prompt_completion", "'tools' must be a list of tool"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": True}]},
     "messages", "message 1: 'tool_calls' must be a list of calls"),
])
def test_wrong_types_are_named_in_the_reason(row, fmt, reason):
    with pytest.raises(BadRow, match=re.escape(reason)):
        normalise_row(row, fmt)


def test_tools_and_tool_calls_given_as_json_strings_are_decoded(tiny_tokenizer):
    """Many function-calling sets store the tool list (and the calls) as JSON strings; they render like the lists."""
    tools = [{"type": "function", "function": {"name": "get_rate", "description": "FX rate.",
                                               "parameters": {"type": "object", "properties": {}}}}]
    messages = [{"role": "user", "content": "EUR/USD?"}, {"role": "assistant", "content": "1.08"}]
    as_string = normalise_row({"messages": messages, "tools": json.dumps(tools)}, "messages")
    as_list = normalise_row({"messages": messages, "tools": tools}, "messages")
    assert as_string == as_list
    assert "get_rate" in render_with_mask(tiny_tokenizer, as_string).text
    calls = [{"type": "function", "function": {"name": "get_rate", "arguments": {"pair": "EURUSD"}}}]
    step = [{"role": "user", "content": "EUR/USD?"}, {"role": "assistant", "content": "", "tool_calls": calls}]
    as_string = normalise_row({"messages": [step[0], {**step[1], "tool_calls": json.dumps(calls)}]}, "messages")
    assert as_string == normalise_row({"messages": step}, "messages")


def test_reasons_group_by_kind_whatever_the_message_number():
    from qwen35_tune.data.quarantine import reason_key

    assert reason_key("message 3: unknown role 'bot' (expected one of ...)") == "unknown role"
    assert reason_key("message 0 is not an object") == reason_key("message 7 is not an object")
    assert reason_key("message 2: content part 4 is not an object") == "content part N is not an object"


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_card_of_random_rows_builds_and_quarantines_never_crashes(tmp_path, tiny_vision, fmt):
    """The whole card path (file reading, normalising, media checks, hygiene, rendering with a vision processor,
    quarantine and counts) on 300 random rows, with junk in the image and video columns too: it builds or stops
    with a UserError that says why, and every row is either kept or in the quarantine file with a reason."""
    from qwen35_tune.data.build import build_datasets
    from qwen35_tune.errors import UserError
    from qwen35_tune.models.processor import processor_for_run
    from qwen35_tune.recipe import load_recipe

    rng = random.Random(FORMATS.index(fmt))
    rows = [_random_row(rng) for _ in range(300)]
    for row in rows:
        if rng.random() < 0.3:
            row["images"] = rng.choice([[None], [{"bytes": None}], ["nope.png"], [3], "x.png", [[]]])
        if rng.random() < 0.2:
            row["videos"] = rng.choice([[{"a": 1}], [7], ["clip.mp4"]])
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "c.yaml").write_text(f"name: c\nlicense: mit\nformat: {fmt}\nmax_bad_fraction: 1.0\n"
                                     "source: {path: c.jsonl}\n")
    (tmp_path / "recipe.yaml").write_text(f"name: t\nmodel: {{name_or_path: '{tiny_vision}'}}\n"
                                          "train: {max_length: 64}\ndata:\n  cards: [{path: c.yaml}]\n")
    recipe = load_recipe(tmp_path / "recipe.yaml", [])
    processor = processor_for_run(recipe, str(tiny_vision))
    try:
        train, _, stats = build_datasets(recipe, processor.tokenizer, tmp_path, processor=processor)
    except UserError as exc:  # every row of some formats is junk; the message must say where to look
        assert "no training rows left" in str(exc)
        return
    card = stats["cards"][0]
    quarantined = (tmp_path / "quarantine.jsonl").read_text().splitlines()
    assert card["rows"] == 300 and len(quarantined) == sum(card["bad"].values())
    assert card["kept"] + card["duplicate"] + card["too_long_dropped"] + len(quarantined) == 300
    assert all(json.loads(line)["reason"] for line in quarantined)
