"""Loss masks, compared exactly with trained spans written by hand, for the project's Qwen3.5 template and for a
second, differently structured ChatML-style template (tests/unit/fixtures/templates/chatml_keep_reasoning.jinja).

Each expected entry is the decoded text of one run of trained tokens, in order. Rows go through the same
normalise → render → mask → verify path the trainer uses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen35_tune.data.formats import BadRow, normalise_row
from qwen35_tune.data.render import render_with_mask, thinking_policy, trained_texts

ALT_TEMPLATE = (Path(__file__).parent / "fixtures" / "templates" / "chatml_keep_reasoning.jinja").read_text()
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather in a city.",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
END = "<|im_end|>"


def u(text):
    return {"role": "user", "content": text}


def a(text, reasoning=None, **extra):
    msg = {"role": "assistant", "content": text, **extra}
    if reasoning is not None:
        msg["reasoning_content"] = reasoning
    return msg


CALL = {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}

# name -> (raw row, expected trained runs with the Qwen3.5 template, ... with the alternative template)
FIXTURES = {
    "single_turn": ({"messages": [u("What is 2+2?"), a("4.")]}, ["4." + END], ["4." + END]),
    "multi_turn": (
        {"messages": [u("Hi"), a("Hello."), u("Bye"), a("Goodbye.")]},
        ["Hello." + END, "Goodbye." + END],
        ["Hello." + END, "Goodbye." + END],
    ),
    "thinking_final_turn": (
        {"messages": [u("What is 3*4?"), a("12", "3 times 4 is 12.")]},
        ["3 times 4 is 12.\n</think>\n\n12" + END],  # the prompt already opened <think>\n
        ["<think>3 times 4 is 12.</think>\n12" + END],
    ),
    "thinking_in_history": (
        {"messages": [u("2+2?"), a("4", "Two plus two."), u("Times 3?"), a("12", "4 times 3 is 12.")]},
        ["4" + END, "4 times 3 is 12.\n</think>\n\n12" + END],  # Qwen3.5 drops old reasoning
        ["<think>Two plus two.</think>\n4" + END, "<think>4 times 3 is 12.</think>\n12" + END],  # this one keeps it
    ),
    "empty_think_block": (
        {"messages": [u("Hi"), a("<think>\n\n</think>\n\nHello.")]}, ["Hello." + END], ["Hello." + END],
    ),
    "tool_call_and_result": (
        {"messages": [{"role": "system", "content": "You check weather."}, u("Weather in Paris?"),
                      a("", tool_calls=[CALL]), {"role": "tool", "content": "sunny"}, a("It is sunny in Paris.")],
         "tools": [WEATHER_TOOL]},
        ["<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>" + END,
         "It is sunny in Paris." + END],
        ['<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' + END,
         "It is sunny in Paris." + END],
    ),
    "tool_chain_in_history": (  # a tool chain answered before a later question: Qwen re-renders it as history
        {"messages": [u("Weather in Paris?"), a("", tool_calls=[CALL]), {"role": "tool", "content": "sunny"},
                      a("It is sunny."), u("Thanks"), a("Bye.")],
         "tools": [WEATHER_TOOL]},
        ["<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>" + END,
         "It is sunny." + END, "Bye." + END],
        ['<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' + END,
         "It is sunny." + END, "Bye." + END],
    ),
    "system_prompt": (
        {"messages": [{"role": "system", "content": "Be brief."}, u("Hi"), a("Hello.")]},
        ["Hello." + END], ["Hello." + END],
    ),
    "non_thinking_mode": (  # a row asking for thinking off trains the plain answer; its reasoning is dropped
        {"messages": [u("Hi"), a("Hello.", "Greet back.")], "enable_thinking": False},
        ["Hello." + END], ["Hello." + END],
    ),
}


@pytest.fixture(scope="module")
def tok(tiny_tokenizer):
    return tiny_tokenizer


def _render(tok, raw, template=None, **kwargs):
    return render_with_mask(tok, normalise_row(raw, "messages"), template=template, **kwargs)


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("which", ["qwen3_5", "chatml_alt"])
def test_trained_spans_exactly(tok, name, which):
    raw, expected_qwen, expected_alt = FIXTURES[name]
    template = ALT_TEMPLATE if which == "chatml_alt" else None
    row = _render(tok, raw, template)
    assert trained_texts(row, tok) == (expected_alt if template else expected_qwen)
    # token by token: every id is either trained with its own id as label or masked
    assert all(label in (-100, tid) for tid, label in zip(row.input_ids, row.labels, strict=True))


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("which", ["qwen3_5", "chatml_alt"])
def test_template_parity(tok, name, which):
    """The text and ids the trainer sees are exactly apply_chat_template of the same conversation."""
    raw, _, _ = FIXTURES[name]
    template = ALT_TEMPLATE if which == "chatml_alt" else None
    row = _render(tok, raw, template)
    canonical = normalise_row(raw, "messages")
    messages, kwargs = thinking_policy(canonical, None)
    expect_text = tok.apply_chat_template(messages, tools=canonical.get("tools"), chat_template=template,
                                          tokenize=False, **kwargs)
    expect_ids = tok.apply_chat_template(messages, tools=canonical.get("tools"), chat_template=template,
                                         tokenize=True, return_dict=True, **kwargs)["input_ids"]
    assert row.text == expect_text
    assert row.input_ids == list(expect_ids)


def test_inline_think_renders_like_reasoning_content(tok):
    inline = _render(tok, {"messages": [u("q"), a("<think>\nsteps\n</think>\n\nanswer")]})
    split = _render(tok, {"messages": [u("q"), a("answer", "steps")]})
    assert (inline.input_ids, inline.labels) == (split.input_ids, split.labels)


def test_empty_think_block_trained_when_asked(tok):
    row = _render(tok, FIXTURES["empty_think_block"][0], mask_empty_think=False)
    # the boundary falls inside the "\n\n" token after <think>: that token is what the model predicts, so trained
    assert trained_texts(row, tok) == ["\n\n</think>\n\nHello." + END]


def test_recipe_level_non_thinking_mode(tok):
    raw = FIXTURES["thinking_final_turn"][0]
    row = _render(tok, raw, enable_thinking=False)
    assert trained_texts(row, tok) == ["12" + END]
    assert "3 times 4" not in row.text
    # a row's own enable_thinking beats the recipe's
    row = _render(tok, {**raw, "enable_thinking": True}, enable_thinking=False)
    assert trained_texts(row, tok) == ["3 times 4 is 12.\n</think>\n\n12" + END]


def test_final_turn_only_and_all(tok):
    raw = FIXTURES["thinking_in_history"][0]
    row = _render(tok, raw, train_on="final_turn_only")
    assert trained_texts(row, tok) == ["4 times 3 is 12.\n</think>\n\n12" + END]
    row = _render(tok, raw, train_on="all")
    assert trained_texts(row, tok) == [row.text] and row.n_trained == len(row.input_ids)


def test_assistant_first_is_bad(tok):
    with pytest.raises(BadRow, match="starts with an assistant turn"):
        render_with_mask(tok, {"messages": [a("hi"), u("x"), a("y")]})


def test_tokenizer_that_disagrees_with_its_offsets_is_caught(tok):
    """Verification decodes ids instead of trusting offsets: a lying decode quarantines the row."""

    class Liar:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

        def decode(self, ids, **kwargs):
            return self.inner.decode(ids, **kwargs) + "x"

    with pytest.raises(BadRow, match="mask verification failed"):
        render_with_mask(Liar(tok), normalise_row(FIXTURES["single_turn"][0], "messages"))


def test_decomposed_accents_are_trained_not_quarantined(tok):
    """'é' written as e + combining accent (macOS, some PDFs): the tokenizer's NFC normaliser composes it, so the
    trained ids decode to the composed form; the row must still train, on exactly its answer."""
    row = _render(tok, {"messages": [u("Caf\u00e9 or cafe\u0301?"), a("Cafe\u0301, d\u00e9ja\u0300 vu.")]})
    assert trained_texts(row, tok) == ["Caf\u00e9, d\u00e9j\u00e0 vu." + END]
