"""Batched render + mask + tokenise: the same rows, labels and checks as ``render.render_with_mask``, faster.

Three costs dominate ``render_with_mask`` on many rows (profiled on 2000 CoT rows): ``apply_chat_template``'s
per-call work around the template (normalising, copying and sanitising messages, looking the template up), the
per-token label loop, and one tokenizer call per row. Here the template is compiled once the way transformers
compiles it (into data/fast_template.py's faster sandbox) and rendered with the same variables
``apply_chat_template`` gives it (the special tokens, ``messages``, ``tools``, ``add_generation_prompt`` and the
template kwargs), labels come from one sweep over sorted offsets, and a whole batch is tokenised in one
fast-tokenizer call. ``render_with_mask`` stays the reference implementation; tests compare the two on both
templates.
"""

from __future__ import annotations

from typing import Any

from qwen35_tune.data.formats import BadRow
from qwen35_tune.data.render import RenderedRow, spans_from_renders, thinking_policy, verify_mask

# apply_chat_template copies the reasoning text under these names too (older templates and gpt-oss read them).
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class CompiledChat:
    """A chat template compiled once, rendered like ``tokenizer.apply_chat_template(..., tokenize=False)``."""

    def __init__(self, tokenizer, template: str | None = None):
        from qwen35_tune.data.fast_template import compile_chat_template

        self.tokenizer, self.template = tokenizer, template
        self.specials = dict(tokenizer.special_tokens_map)
        self._compiled: dict[str, Any] = {}
        self._compile = compile_chat_template

    def _template_for(self, tools):
        text = self.tokenizer.get_chat_template(self.template, tools)
        if text not in self._compiled:
            self._compiled[text] = self._compile(text)
        return self._compiled[text]

    def render(self, messages: list[dict], tools, generation: bool, **kwargs) -> str:
        from jinja2 import TemplateError

        chat = []
        for message in messages:  # what apply_chat_template does to each message before the template sees it
            message = {k: v for k, v in message.items() if v is not None}
            reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
            if reasoning is not None:
                message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
            chat.append(message)
        try:
            return self._template_for(tools).render(
                messages=chat, tools=tools, documents=None, add_generation_prompt=generation,
                **{**self.specials, **kwargs},
            )
        except TemplateError as exc:  # same wording as render._render
            raise BadRow(f"chat template refused the conversation: {exc}") from None


def _text_and_spans(chat: CompiledChat, row: dict, options: dict) -> tuple[str, list[tuple[int, int]]]:
    """The full text and trained character spans of one row (render.spans_from_renders over the compiled template)."""
    tokenizer = chat.tokenizer
    if "text" in row:
        text = row["text"] + tokenizer.pad_token  # as render_with_mask: <|endoftext|> separates documents
        return text, [(0, len(text))]
    messages, kwargs = thinking_policy(row, options.get("enable_thinking"))
    tools = row.get("tools")
    return spans_from_renders(lambda conversation, generation: chat.render(conversation, tools, generation, **kwargs),
                              messages, tokenizer.eos_token, options.get("train_on", "assistant_only"),
                              options.get("mask_empty_think", True))


def _labels(ids: list[int], offsets, spans: list[tuple[int, int]]) -> list[int]:
    """A token is trained when its characters overlap a span (spans sorted and disjoint): vectorised, because a
    per-token Python loop was a fifth of the batch time."""
    import numpy as np

    if not ids:
        return []
    starts, ends = np.asarray(offsets, dtype=np.int64).T
    span_starts, span_ends = np.asarray(spans, dtype=np.int64).reshape(-1, 2).T
    nearest = np.searchsorted(span_ends, starts, side="right")  # first span ending after the token starts
    inside = nearest < len(spans)
    trained = inside & (ends > span_starts[np.minimum(nearest, len(spans) - 1)])
    return np.where(trained, np.asarray(ids), -100).tolist()


def _encode(tokenizer, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """Ids and character offsets of each text; straight from the Rust tokenizer when there is one (the python
    wrapper's per-encoding conversion was a tenth of the time), else through the tokenizer call."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return [(e.ids, e.offsets) for e in backend.encode_batch(texts, add_special_tokens=False)]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return list(zip(enc["input_ids"], enc["offset_mapping"], strict=True))


def _decoder(tokenizer):
    """ids -> text with special tokens kept, straight from the Rust tokenizer when the wrapper adds nothing to it
    (no clean-up of tokenization spaces), else the tokenizer's own decode."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return lambda ids: tokenizer.decode(ids, skip_special_tokens=False)
    return lambda ids: backend.decode(ids, skip_special_tokens=False)


def render_batch(tokenizer, rows: list[dict], *, template: str | None = None, chat: CompiledChat | None = None,
                 **options) -> list[RenderedRow | BadRow]:
    """Each row rendered, masked, tokenised and verified, or the BadRow saying why not, in row order.

    ``options`` are render_with_mask's (train_on, mask_empty_think, enable_thinking).
    """
    chat = chat or CompiledChat(tokenizer, template)
    out: list[RenderedRow | BadRow | None] = [None] * len(rows)
    texts, spans_of, where = [], [], []
    for i, row in enumerate(rows):
        try:
            text, spans = _text_and_spans(chat, row, options)
        except BadRow as exc:
            out[i] = exc
            continue
        texts.append(text)
        spans_of.append(spans)
        where.append(i)
    if texts:
        encoded, decode = _encode(tokenizer, texts), _decoder(tokenizer)
        for j, i in enumerate(where):
            ids, offsets = encoded[j]
            spans = spans_of[j]
            labels = list(ids) if "text" in rows[i] else _labels(ids, offsets, spans)
            rendered = RenderedRow(texts[j], ids, labels, tuple(spans))
            try:
                if "text" not in rows[i]:  # plain text trains every token: nothing to verify
                    if rendered.n_trained == 0:
                        raise BadRow("no trainable token")
                    verify_mask(tokenizer, rendered, offsets, decode)
            except BadRow as exc:
                out[i] = exc
                continue
            out[i] = rendered
    return out  # type: ignore[return-value]
