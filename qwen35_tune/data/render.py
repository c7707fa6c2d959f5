"""Render a conversation with the checkpoint's own chat template and derive which tokens are trained.

The mask is derived without ``{% generation %}`` markers so it works with any template (the official Qwen3.5 one
has none): for each assistant turn, the prompt render (history + generation prompt) is compared with the full
render; the trained span starts where they diverge (what the model would generate) and ends after the turn's
end-of-turn token. Each span is then checked to contain the turn's own content, so a template we misread fails
loudly (the row is quarantined) instead of training on the wrong tokens.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal

from qwen35_tune.data.formats import BadRow, _text_of

TrainOn = Literal["assistant_only", "final_turn_only", "all"]
# An empty reasoning block as Qwen templates write it; masked by default (learning to emit nothing teaches nothing).
_EMPTY_THINK = re.compile(r"(<think>)?\s*</think>\s*")


@dataclass(frozen=True)
class RenderedRow:
    """A tokenised row: the exact text the trainer sees, ids, labels (-100 = not trained) and trained char spans."""

    text: str
    input_ids: list[int]
    labels: list[int]
    spans: tuple[tuple[int, int], ...]

    @property
    def n_trained(self) -> int:
        return sum(label != -100 for label in self.labels)


def _render(tokenizer, messages: list[dict], tools, template: str | None, generation: bool, **kwargs) -> str:
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(
            messages, tools=tools, chat_template=template, tokenize=False, add_generation_prompt=generation, **kwargs
        )
    except TemplateError as exc:  # e.g. a system turn that is not first: the template's own rule, in its words
        raise BadRow(f"chat template refused the conversation: {exc}") from None


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = os.path.commonprefix([a[:n], b[:n]])
    return len(i)


def _turn_span(
    full: str, prompt: str, cursor: int, eos: str, message: dict, mask_empty_think: bool
) -> tuple[int, int]:
    start = max(_common_prefix(prompt, full), cursor)
    end = full.find(eos, start)
    if end < 0:
        raise BadRow("chat template wrote no end-of-turn token after an assistant turn")
    end += len(eos)
    if mask_empty_think and not message.get("reasoning_content"):
        empty = _EMPTY_THINK.match(full, start, end)
        if empty and empty.group(0).strip():
            start = empty.end()
    expected = _text_of(message["content"]).strip()
    if expected and expected not in full[start:end]:
        raise BadRow("assistant content not found where the chat template put the turn (mask derivation failed)")
    return start, end


def assistant_spans(
    tokenizer,
    messages: list[dict],
    *,
    tools=None,
    template: str | None = None,
    train_on: TrainOn = "assistant_only",
    mask_empty_think: bool = True,
    full: str | None = None,
    **template_kwargs: Any,
) -> tuple[str, list[tuple[int, int]]]:
    """The full rendered text and the character spans the model is trained to produce."""
    if full is None:
        full = _render(tokenizer, messages, tools, template, False, **template_kwargs)
    if train_on == "all":
        return full, [(0, len(full))]
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if train_on == "final_turn_only":
        turns = turns[-1:]
    if turns and turns[0] == 0:
        raise BadRow("conversation starts with an assistant turn (no prompt to condition on)")
    spans, cursor = [], 0
    for i in turns:
        prompt = _render(tokenizer, messages[:i], tools, template, True, **template_kwargs)
        span = _turn_span(full, prompt, cursor, tokenizer.eos_token, messages[i], mask_empty_think)
        spans.append(span)
        cursor = span[1]
    return full, spans


def render_with_mask(
    tokenizer,
    row: dict,
    *,
    template: str | None = None,
    train_on: TrainOn = "assistant_only",
    mask_empty_think: bool = True,
    enable_thinking: bool | None = None,
) -> RenderedRow:
    """Canonical row → ids and labels; plain-text rows are trained on every token plus an end-of-text token."""
    if "text" in row:
        text = row["text"] + tokenizer.pad_token  # <|endoftext|> separates documents in continued pre-training
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return RenderedRow(text, ids, list(ids), ((0, len(text)),))
    kwargs: dict[str, Any] = {}
    thinking = row.get("enable_thinking", enable_thinking)
    if thinking is not None:
        kwargs["enable_thinking"] = thinking
    full, spans = assistant_spans(
        tokenizer, row["messages"], tools=row.get("tools"), template=template, train_on=train_on,
        mask_empty_think=mask_empty_think, **kwargs,
    )
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [tok if _overlaps(off, spans) else -100 for tok, off in zip(ids, offsets, strict=True)]
    rendered = RenderedRow(full, ids, labels, tuple(spans))
    if rendered.n_trained == 0:
        raise BadRow("no trainable token")
    return rendered


def _overlaps(offset: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    start, end = offset
    return any(start < b and end > a for a, b in spans)
