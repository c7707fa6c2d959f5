"""The hand-written mask fixtures hold on Qwen's official Qwen3.5/3.6 chat templates too, and the fast batched
renderer gives exactly the reference path's ids and labels on them.

Real checkpoints carry their own template, which never reaches these machines with the weights; TRL's wheel ships
verbatim copies of the official ones (trl/chat_templates/), so the tests read them from the installed package.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen35_tune.data.batch_render import render_batch
from qwen35_tune.data.formats import BadRow, normalise_row
from qwen35_tune.data.render import render_with_mask, trained_texts
from tests.unit.test_masks import FIXTURES

OFFICIAL = ["qwen3_5_think.jinja", "qwen3_5_nothink.jinja", "qwen3_6.jinja"]


def _official(name: str) -> str:
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


def _random_conversation(rng) -> dict:
    """A conversation mixing what real cards hold: system prompts, several turns, reasoning (as a field, inline, or
    empty), tool calls with their results, and text with CJK, emoji, combining marks and stray whitespace."""
    words = ["yield", "bond", "数学", "🙂", "e\u0301t\u00e9", "  ", "\n", "3.5%", "<b>", "Paris", "¿qué?", "x" * 12]

    def text():  # never blank: an empty assistant turn is a bad row before rendering, which is not tested here
        return rng.choice(words[:4]) + "".join(rng.choice(words) + rng.choice(["", " ", "\n\n"])
                                               for _ in range(rng.randint(0, 8)))

    messages = [{"role": "system", "content": text()}] if rng.random() < 0.4 else []
    row: dict = {}
    for _ in range(rng.randint(1, 3)):
        messages.append({"role": "user", "content": text()})
        if rng.random() < 0.25:
            call = {"type": "function", "function": {"name": "lookup", "arguments": {"q": text()}}}
            messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
            messages.append({"role": "tool", "content": text()})
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


@pytest.mark.parametrize("template_name", [None, "qwen3_5_think.jinja"], ids=["project", "official"])
def test_batched_renderer_equals_reference_on_random_conversations(tiny_tokenizer, template_name):
    """200 random valid conversations: none is quarantined (multi-question tool chains, decomposed accents and all),
    and the fast path (compiled template, edge-derived labels, run checks) gives the reference path's text, ids and
    labels row by row."""
    import random

    template = _official(template_name) if template_name else None
    rng = random.Random(7)
    rows = [normalise_row(_random_conversation(rng), "messages") for _ in range(200)]
    ok = 0
    for row, got in zip(rows, render_batch(tiny_tokenizer, rows, template=template), strict=True):
        try:
            want = render_with_mask(tiny_tokenizer, row, template=template)
        except BadRow as exc:
            assert isinstance(got, BadRow) and str(got) == str(exc)
            continue
        assert not isinstance(got, BadRow), got
        assert (got.text, got.input_ids, got.labels) == (want.text, want.input_ids, want.labels)
        ok += 1
    assert ok == len(rows), "a valid conversation was quarantined"
