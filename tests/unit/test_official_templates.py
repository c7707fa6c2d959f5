"""The hand-written mask fixtures hold on Qwen's official Qwen3.5/3.6 chat templates too, and the fast batched
renderer gives exactly the reference path's ids and labels on them.

Real checkpoints carry their own template, which never reaches these machines with the weights; TRL's wheel ships
verbatim copies of the official ones (trl/chat_templates/), so the tests read them from the installed package.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen35_tune.data.batch_render import render_batch
from qwen35_tune.data.formats import BadRow, normalise_row
from qwen35_tune.data.render import render_with_mask, trained_texts
from tests.unit.test_masks import FIXTURES

OFFICIAL = ["qwen3_5_think.jinja", "qwen3_5_nothink.jinja", "qwen3_6.jinja"]


def _official(name: str | None) -> str | None:
    if name is None:  # the project's own template, which the tiny tokenizer carries
        return None
    trl = pytest.importorskip("trl")
    path = Path(trl.__file__).parent / "chat_templates" / name
    if not path.is_file():
        pytest.skip(f"this TRL has no copy of {name}")
    return path.read_text()


@pytest.mark.parametrize("template_name", OFFICIAL)
@pytest.mark.parametrize("name", FIXTURES)
def test_official_template_trains_the_hand_written_spans(tiny_tokenizer, template_name, name):
    raw, expected, _ = FIXTURES[name]
    row = render_with_mask(tiny_tokenizer, normalise_row(raw, "messages"), template=_official(template_name))
    assert trained_texts(row, tiny_tokenizer) == expected


@pytest.mark.parametrize("options", [{}, {"enable_thinking": False}, {"train_on": "final_turn_only"}], ids=str)
@pytest.mark.parametrize("template_name", OFFICIAL)
def test_batched_renderer_equals_reference_on_official_template(tiny_tokenizer, template_name, options):
    template = _official(template_name)
    rows = [normalise_row(raw, "messages") for raw, _, _ in FIXTURES.values()]
    for row, got in zip(rows, render_batch(tiny_tokenizer, rows, template=template, **options), strict=True):
        try:
            want = render_with_mask(tiny_tokenizer, row, template=template, **options)
        except BadRow as exc:
            assert isinstance(got, BadRow) and str(got) == str(exc)
            continue
        assert not isinstance(got, BadRow), got
        assert (got.text, got.input_ids, got.labels) == (want.text, want.input_ids, want.labels)


def _random_conversation(rng, content_parts: bool = True) -> dict:
    """A conversation mixing what real cards hold: system prompts, several turns, reasoning (as a field, inline, or
    empty), tool calls with their results, and text with CJK, emoji, combining marks and stray whitespace."""
    words = ["yield", "bond", "数学", "🙂", "e\u0301t\u00e9", "  ", "\n", "3.5%", "<b>", "Paris", "¿qué?", "x" * 12]

    def text():  # never blank: an empty assistant turn is a bad row before rendering, which is not tested here
        return rng.choice(words[:4]) + "".join(rng.choice(words) + rng.choice(["", " ", "\n\n"])
                                               for _ in range(rng.randint(0, 8)))

    messages = [{"role": "system", "content": text()}] if rng.random() < 0.4 else []
    row: dict = {}
    for _ in range(rng.randint(1, 3)):
        parts = content_parts and rng.random() < 0.2
        messages.append({"role": "user", "content": [{"type": "text", "text": text()}] if parts else text()})
        for _ in range(rng.choice([0, 0, 1, 2])):  # a chain of tool steps, some with parallel calls
            calls = [{"type": "function", "function": {"name": "lookup", "arguments": {"q": text()}}}
                     for _ in range(rng.randint(1, 2))]
            if rng.random() < 0.3:  # OpenAI rows carry arguments as a JSON string
                calls[0]["function"]["arguments"] = json.dumps(calls[0]["function"]["arguments"], ensure_ascii=False)
            step = {"role": "assistant", "content": text() if rng.random() < 0.3 else "", "tool_calls": calls}
            if rng.random() < 0.3:
                step["reasoning_content"] = text()
            messages.append(step)
            messages.extend({"role": "tool", "content": text()} for _ in calls)
            row["tools"] = [{"type": "function", "function": {
                "name": "lookup", "description": "Look up.",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
        style = rng.choice(["plain", "field", "inline", "empty"])
        answer = {"role": "assistant", "content": text()}
        if style == "field":
            answer["reasoning_content"] = text()
        elif style == "inline":
            answer["content"] = f"<think>\n{text()}\n</think>\n\n{answer['content']}"
        elif style == "empty":
            answer["content"] = "<think>\n\n</think>\n\n" + answer["content"]
        messages.append(answer)
    if rng.random() < 0.2:
        row["enable_thinking"] = False
    return {"messages": messages, **row}


@pytest.mark.parametrize("options", [{}, {"enable_thinking": False}, {"train_on": "final_turn_only"},
                                     {"mask_empty_think": False}], ids=str)
@pytest.mark.parametrize("template_name", [None, "chatml_alt", "qwen3_5_think.jinja"])
def test_random_conversations_train_and_batched_equals_reference(tiny_tokenizer, template_name, options):
    """150 random valid conversations (tool chains before later questions, parallel calls, JSON-string arguments,
    content parts, decomposed accents): none is quarantined, and the fast path (compiled template, edge-derived
    labels, run checks) gives the reference path's text, ids and labels row by row."""
    import random

    from tests.unit.test_masks import ALT_TEMPLATE

    template = {None: None, "chatml_alt": ALT_TEMPLATE}.get(template_name) or _official(template_name)
    rng = random.Random(7)
    parts = template_name != "chatml_alt"  # that test template only takes string content
    rows = [normalise_row(_random_conversation(rng, parts), "messages") for _ in range(150)]
    got = render_batch(tiny_tokenizer, rows, template=template, **options)
    for index, (row, fast) in enumerate(zip(rows, got, strict=True)):
        try:
            want = render_with_mask(tiny_tokenizer, row, template=template, **options)
        except BadRow as exc:
            raise AssertionError(f"valid conversation {index} quarantined: {exc}\n{row}") from None
        assert not isinstance(fast, BadRow), fast
        assert (fast.text, fast.input_ids, fast.labels) == (want.text, want.input_ids, want.labels)
