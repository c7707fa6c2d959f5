"""The project's Qwen3.5 chat template, rendered through transformers' apply_chat_template, against hand-written
strings in Qwen3.5's format (see the notes at the top of qwen35_tune/templates/qwen3_5_chat.jinja)."""

from __future__ import annotations

import json

import pytest
from jinja2.exceptions import TemplateError

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def tok(tiny_tokenizer):
    return tiny_tokenizer


def render(tok, messages, **kwargs) -> str:
    return tok.apply_chat_template(messages, tokenize=False, **kwargs)


def test_system_user_assistant(tok):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello."},
    ]
    assert render(tok, messages) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nHello.<|im_end|>\n"  # after the last query: empty think block
    )


def test_content_is_trimmed(tok):
    messages = [{"role": "user", "content": "  Hi \n"}, {"role": "assistant", "content": "\nHello.\n\n"}]
    assert render(tok, messages) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello.<|im_end|>\n"
    )


def test_reasoning_dropped_in_history_kept_in_final_turn(tok):
    messages = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "Two plus two."},
        {"role": "user", "content": "Times 3?"},
        {"role": "assistant", "content": "12", "reasoning_content": "\n4 times 3 is 12.\n"},
    ]
    assert render(tok, messages) == (
        "<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>user\nTimes 3?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n4 times 3 is 12.\n</think>\n\n12<|im_end|>\n"
    )


def test_inline_think_is_split_out(tok):
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "<think>old thought</think>\n\nb"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "<think>\nnew thought\n</think>\n\nd"},
    ]
    assert render(tok, messages) == (
        "<|im_start|>user\na<|im_end|>\n"
        "<|im_start|>assistant\nb<|im_end|>\n"
        "<|im_start|>user\nc<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nnew thought\n</think>\n\nd<|im_end|>\n"
    )


@pytest.mark.parametrize(
    ("kwargs", "suffix"),
    [
        ({}, "<think>\n"),  # thinking is on by default (Qwen3.5 >= 4B)
        ({"enable_thinking": True}, "<think>\n"),
        ({"enable_thinking": False}, "<think>\n\n</think>\n\n"),
    ],
)
def test_generation_prompt(tok, kwargs, suffix):
    messages = [{"role": "user", "content": "Hi"}]
    out = render(tok, messages, add_generation_prompt=True, **kwargs)
    assert out == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n" + suffix


@pytest.mark.parametrize("thinking", [True, False])
def test_prompt_is_a_prefix_of_the_answered_conversation(tok, thinking):
    """Masking derives the trained span from where the prompt render stops; that needs this prefix property."""
    prompt = [{"role": "user", "content": "Hi"}]
    answer = {"role": "assistant", "content": "Hello."}
    if thinking:
        answer["reasoning_content"] = "Greet back."
    full = render(tok, [*prompt, answer], enable_thinking=thinking)
    assert full.startswith(render(tok, prompt, add_generation_prompt=True, enable_thinking=thinking))


def test_tool_call_and_grouped_tool_responses(tok):
    messages = [
        {"role": "system", "content": "You help with weather."},
        {"role": "user", "content": "Paris and Oslo?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "reasoning_content": "Two cities, two calls.",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}},
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
            ],
        },
        {"role": "tool", "content": "sunny, 21 C"},
        {"role": "tool", "content": "rain, 9 C"},
        {"role": "assistant", "content": "Paris is sunny; Oslo is rainy."},
    ]
    out = render(tok, messages, tools=[WEATHER_TOOL])
    system, rest = out.split("<|im_end|>\n", 1)
    assert system.startswith("<|im_start|>system\n# Tools\n\n")
    assert "\n\n<tools>\n" + json.dumps(WEATHER_TOOL, ensure_ascii=False) + "\n</tools>\n\n" in system
    assert "<tool_call>\n<function=" in system and "<parameter=" in system  # the format is described
    assert system.endswith("\n\nYou help with weather.")  # system text after the tool list, as Qwen3.5 orders it
    assert rest == (
        "<|im_start|>user\nParis and Oslo?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nTwo cities, two calls.\n</think>\n\nLet me check.\n\n"
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
        "<parameter=days>\n2\n</parameter>\n</function>\n</tool_call>\n"
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nOslo\n</parameter>\n</function>\n</tool_call>"
        "<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nsunny, 21 C\n</tool_response>\n"
        "<tool_response>\nrain, 9 C\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nParis is sunny; Oslo is rainy.<|im_end|>\n"
    )


def test_tool_call_without_content_and_json_values(tok):
    messages = [
        {"role": "user", "content": "Plan it."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"name": "plan", "arguments": {"steps": ["a", "b"], "fast": True, "limit": None}}],
        },
        {"role": "tool", "content": "ok"},
    ]
    assert render(tok, messages, add_generation_prompt=True) == (
        "<|im_start|>user\nPlan it.<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
        "<tool_call>\n<function=plan>\n"
        '<parameter=steps>\n["a", "b"]\n</parameter>\n'
        "<parameter=fast>\ntrue\n</parameter>\n"
        "<parameter=limit>\nnull\n</parameter>\n"
        "</function>\n</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nok\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>\n"
    )


def test_tools_without_system_message(tok):
    out = render(tok, [{"role": "user", "content": "Hi"}], tools=[WEATHER_TOOL])
    system, rest = out.split("<|im_end|>\n", 1)
    assert system.startswith("<|im_start|>system\n# Tools\n\n") and system.count("<|im_start|>") == 1
    assert not system.endswith("\n")  # no dangling separator where the system text would go
    assert rest == "<|im_start|>user\nHi<|im_end|>\n"


def test_images_and_videos(tok):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "text", "text": "What is in the picture and the clip?"},
                {"type": "video"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "A cat, then a dog."}]},
    ]
    assert render(tok, messages) == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is in the picture and the clip?"
        "<|vision_start|><|video_pad|><|vision_end|><|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nA cat, then a dog.<|im_end|>\n"
    )
    numbered = render(tok, messages[:1], add_vision_id=True)
    assert numbered == (
        "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>What is in the picture and the clip?"
        "Video 1: <|vision_start|><|video_pad|><|vision_end|><|im_end|>\n"
    )


def test_rendered_markup_tokenizes_to_single_special_ids(tok):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    ids = tok.encode(render(tok, messages, add_generation_prompt=True))
    for token in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<think>"):
        assert tok.convert_tokens_to_ids(token) in ids


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "s"}], "first message"),
        ([{"role": "bot", "content": "a"}, {"role": "user", "content": "b"}], "Unknown message role"),
        ([{"role": "system", "content": "s"}], "no user query"),
        ([{"role": "system", "content": [{"type": "image"}]}, {"role": "user", "content": "b"}], "cannot contain"),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": '{"x": 1}'}]},
            ],
            "decode the JSON",
        ),
    ],
)
def test_bad_conversations_raise(tok, messages, error):
    with pytest.raises(TemplateError, match=error):
        render(tok, messages)
