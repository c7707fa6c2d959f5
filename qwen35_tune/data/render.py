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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from qwen35_tune.data.formats import BadRow
from qwen35_tune.data.messages import text_of

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
        return len(self.labels) - self.labels.count(-100)


def apply_template(tokenizer, messages: list[dict], tools, template: str | None, generation: bool, **kwargs) -> str:
    """``tokenizer.apply_chat_template`` as text; a template that refuses or breaks on the conversation is a BadRow."""
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(
            messages, tools=tools, chat_template=template, tokenize=False, add_generation_prompt=generation, **kwargs
        )
    except TemplateError as exc:  # e.g. a system turn that is not first: the template's own rule, in its words
        raise BadRow(f"chat template refused the conversation: {exc}") from None
    except Exception as exc:  # noqa: BLE001 (a template that breaks on one row loses that row, not the run)
        raise template_failure(exc) from None


def template_failure(exc: Exception) -> BadRow:
    """A chat template that crashed on a conversation (e.g. content parts given to a template that only concatenates
    strings): the row is quarantined with what broke, rather than the whole data build stopping."""
    return BadRow(f"chat template failed on this conversation ({type(exc).__name__}: {exc})")


def _common_prefix(a: str, b: str) -> int:
    if b.startswith(a):  # the usual case (the prompt render is a prefix of the full one), in one C call
        return len(a)
    n = min(len(a), len(b))
    i = os.path.commonprefix([a[:n], b[:n]])
    return len(i)


def _turn_span(full: str, start: int, eos: str, message: dict, mask_empty_think: bool) -> tuple[int, int]:
    end = full.find(eos, start)
    if end < 0:
        raise BadRow("chat template wrote no end-of-turn token after an assistant turn")
    end += len(eos)
    if mask_empty_think and not message.get("reasoning_content"):
        empty = _EMPTY_THINK.match(full, start, end)
        if empty and empty.group(0).strip():
            start = empty.end()
    expected = text_of(message["content"]).strip()
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

    def render(conversation: list[dict], generation: bool) -> str:
        if not generation and full is not None and conversation is messages:
            return full
        return apply_template(tokenizer, conversation, tools, template, generation, **template_kwargs)

    return spans_from_renders(render, messages, tokenizer.eos_token, train_on, mask_empty_think)


def spans_from_renders(
    render: Callable[[list[dict], bool], str], messages: list[dict], eos: str, train_on: TrainOn = "assistant_only",
    mask_empty_think: bool = True,
) -> tuple[str, list[tuple[int, int]]]:
    """The one mask derivation: ``render(conversation, add_generation_prompt)`` renders with whatever template;
    each trained turn is where the full render goes on after the prompt render of the turns before it."""
    full = render(messages, False)
    if train_on == "all":
        return full, [(0, len(full))]
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if train_on == "final_turn_only":
        turns = turns[-1:]
    if turns and turns[0] == 0:
        raise BadRow("conversation starts with an assistant turn (no prompt to condition on)")
    spans, cursor = [], 0
    for i in turns:
        start = _common_prefix(render(messages[:i], True), full)
        if start < cursor:
            start = _start_in_full(render, messages, i, full)
        span = _turn_span(full, max(start, cursor), eos, messages[i], mask_empty_think)
        spans.append(span)
        cursor = span[1]
    return full, spans


def _start_in_full(render: Callable[[list[dict], bool], str], messages: list[dict], i: int, full: str) -> int:
    """Where assistant turn ``i``'s own text starts in the full render, when its prompt render is not a prefix of it.

    That happens when a template renders earlier turns differently once a later user message follows: Qwen's drops
    the (even empty) think blocks of every assistant turn before the last user query, so in a tool chain answered
    before a later question, turn ``i``'s prompt render still shows the chain's first call with its think block and
    the full render does not. In the full conversation the turn is history, trained as it stands there, like any
    earlier turn. To find it without knowing the template, the conversation is rendered again with that turn replaced
    by a one-letter answer: the two renders part where the turn's text begins (two different letters, so a turn that
    starts with the letter cannot hide the spot). This relies on the template writing the messages before turn ``i``
    without looking at turn ``i``'s own text (Qwen's looks only at roles and user messages for this); the caller
    still checks that the span holds the turn's content, and the tokens are verified as for any turn.
    """
    stand_ins = ([*messages[:i], {"role": "assistant", "content": letter}, *messages[i + 1:]] for letter in "AB")
    return min(_common_prefix(render(conversation, False), full) for conversation in stand_ins)


def thinking_policy(row: dict, enable_thinking: bool | None) -> tuple[list[dict], dict[str, Any]]:
    """Messages and template kwargs for one row under the thinking policy.

    A row's own ``enable_thinking`` beats the recipe's ``chat.enable_thinking``. With thinking off the row trains a
    non-thinking answer: its reasoning is dropped, so the template writes the same empty block it puts in the
    generation prompt (which is then prompt, not target).
    """
    thinking = row.get("enable_thinking", enable_thinking)
    kwargs: dict[str, Any] = {} if thinking is None else {"enable_thinking": thinking}
    messages = row["messages"]
    if thinking is False:
        messages = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in messages]
    return messages, kwargs


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
    messages, kwargs = thinking_policy(row, enable_thinking)
    full, spans = assistant_spans(
        tokenizer, messages, tools=row.get("tools"), template=template, train_on=train_on,
        mask_empty_think=mask_empty_think, **kwargs,
    )
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [tok if _overlaps(off, spans) else -100 for tok, off in zip(ids, offsets, strict=True)]
    rendered = RenderedRow(full, ids, labels, tuple(spans))
    if rendered.n_trained == 0:
        raise BadRow("no trainable token")
    verify_mask(tokenizer, rendered, offsets)
    return rendered


def verify_mask(tokenizer, row: RenderedRow, offsets: list[tuple[int, int]]) -> None:
    """Check the labels token by token against the character spans, decoding ids rather than trusting offsets.

    Each contiguous run of trained ids must decode to its span's text, give or take the one token at each end that
    a span boundary may fall inside (e.g. ``<think>\\n|\\n</think>`` where ``\\n\\n`` is one token: the token
    in the ids is what the model must predict, so it is trained). Anything else means the tokenizer and the
    rendered text disagree, and the row is quarantined rather than trained on the wrong tokens.
    """
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
    verify_runs(row.text, row.input_ids, trained_runs(row.labels), row.spans, offsets.__getitem__, decode,
                text_normalizer(tokenizer))


def text_normalizer(tokenizer) -> Callable[[str], str] | None:
    """The tokenizer's own normaliser (Qwen's is NFC), or None: ids decode to normalised text, so a span holding a
    decomposed 'é' (e + combining accent, as macOS and some PDFs write it) decodes to the composed one."""
    normalizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    return normalizer.normalize_str if normalizer is not None else None


def verify_runs(text: str, ids: list[int], runs, spans, token_chars, decode, normalize=None) -> None:
    """``verify_mask`` on runs of trained tokens already known; ``token_chars(i)`` gives token i's (start, end), so
    the batch path asks the Rust encoding for the run edges only, and ``decode(ids) -> str`` may skip the tokenizer
    wrapper (the batch path passes the Rust decoder). ``normalize`` (``text_normalizer``) is applied to the span's
    text before giving up on a mismatch."""
    if len(runs) > len(spans):
        raise BadRow("mask verification failed: trained tokens outside every assistant span")
    for (first, last), (start, end) in zip(runs, spans, strict=False):
        lo, first_end = token_chars(first)
        last_start, hi = token_chars(last - 1)
        decoded, original = decode(ids[first:last]), text[lo:hi]
        same = decoded == original or (normalize is not None and decoded == normalize(original))
        if not same or not (lo <= start and hi >= end):
            raise BadRow("mask verification failed: trained tokens do not decode to the assistant span")
        if first_end <= start or last_start >= end:
            raise BadRow("mask verification failed: a trained token lies outside its assistant span")


def trained_runs(labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) index ranges of consecutive trained labels."""
    runs, start = [], None
    for i, label in enumerate([*labels, -100]):
        if label != -100 and start is None:
            start = i
        elif label == -100 and start is not None:
            runs.append((start, i))
            start = None
    return runs


def trained_texts(row: RenderedRow, tokenizer) -> list[str]:
    """The text of each run of trained tokens, decoded from the ids (what tests and preview compare)."""
    return [tokenizer.decode(row.input_ids[a:b], skip_special_tokens=False) for a, b in trained_runs(row.labels)]


def _overlaps(offset: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    start, end = offset
    return any(start < b and end > a for a, b in spans)
