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
from qwen35_tune.data.render import (
    RenderedRow,
    apply_template,
    spans_from_renders,
    template_failure,
    text_normalizer,
    thinking_policy,
    trained_runs,
    verify_runs,
)

# apply_chat_template copies the reasoning text under these names too (older templates and gpt-oss read them).
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class CompiledChat:
    """A chat template compiled once, rendered like ``tokenizer.apply_chat_template(..., tokenize=False)`` (and
    through it when ``fast_template`` cannot compile one: an upstream private name it reads is gone)."""

    def __init__(self, tokenizer, template: str | None = None):
        from qwen35_tune.data.fast_template import compile_chat_template

        self.tokenizer, self.template = tokenizer, template
        self.specials = dict(tokenizer.special_tokens_map)
        self._compiled: dict[bool, Any] = {}
        self._compile = compile_chat_template

    def _template_for(self, tools):
        has_tools = tools is not None  # all that transformers' get_chat_template looks at in them
        if has_tools not in self._compiled:
            self._compiled[has_tools] = self._compile(self.tokenizer.get_chat_template(self.template, tools))
        return self._compiled[has_tools]

    def warm_up(self, rows: list[dict], options: dict) -> None:
        """Compile the template(s) these rows will use and render one row now, so that processes forked after this
        start with them compiled and warm (compiled templates are cached per process). The template depends only on
        whether a row has tools; plain-text rows need none (a base model's tokenizer may have no template)."""
        for has_tools in {row.get("tools") is not None for row in rows if "messages" in row}:
            self._template_for([] if has_tools else None)
        render_batch(self.tokenizer, rows[:1], chat=self, **options)

    def render(self, messages: list[dict], tools, generation: bool, **kwargs) -> str:
        from jinja2 import TemplateError

        template = self._template_for(tools)
        if template is None:
            return apply_template(self.tokenizer, messages, tools, self.template, generation, **kwargs)
        chat = []
        for message in messages:  # what apply_chat_template does to each message before the template sees it
            message = {k: v for k, v in message.items() if v is not None}
            reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
            if reasoning is not None:
                message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
            chat.append(message)
        # What Template.render does, minus one copy of the variables: jinja2 merges them into the globals itself.
        variables = {**template.globals, **self.specials, **kwargs, "messages": chat, "tools": tools,
                     "documents": None, "add_generation_prompt": generation}
        try:
            return template.environment.concat(template.root_render_func(template.new_context(variables, shared=True)))
        except TemplateError as exc:  # same wording as render.apply_template
            raise BadRow(f"chat template refused the conversation: {exc}") from None
        except Exception as exc:  # noqa: BLE001 (as render.apply_template: the row is lost, not the run)
            raise template_failure(exc) from None


def text_and_spans(chat: CompiledChat, row: dict, options: dict) -> tuple[str, list[tuple[int, int]]]:
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


def labels_from_offsets(ids: list[int], offsets, spans: list[tuple[int, int]]) -> list[int]:
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


def edge_runs(encoding, n_tokens: int, spans) -> list[tuple[int, int]] | None:
    """The [first, last) token runs ``labels_from_offsets`` would train, from the tokens at each span's two edges.

    Token offsets only grow along the ids, so the tokens overlapping a span are one contiguous range: from the first
    token holding the span's first character to the last one holding its last character (a multi-byte character
    split over several byte-level tokens gives them all the same offsets, hence the walk forward). Runs that touch
    are merged, as consecutive trained labels are one run. Converting every offset to Python and comparing them all
    was a third of the per-row time besides rendering and tokenising. None (the caller then uses every offset) when
    a span is empty or an edge character belongs to no token (e.g. a normaliser dropped it).
    """
    runs: list[tuple[int, int]] = []
    for start, end in spans:
        if end <= start:
            return None
        first, last = encoding.char_to_token(start), encoding.char_to_token(end - 1)
        if first is None or last is None:
            return None
        while last + 1 < n_tokens and encoding.token_to_chars(last + 1)[0] < end:
            last += 1
        if runs and first <= runs[-1][1]:
            runs[-1] = (runs[-1][0], last + 1)
        else:
            runs.append((first, last + 1))
    return runs


def runs_to_labels(ids: list[int], runs: list[tuple[int, int]]) -> list[int]:
    labels = [-100] * len(ids)
    for first, last in runs:
        labels[first:last] = ids[first:last]
    return labels


def _encode(tokenizer, texts: list[str]):
    """Rust encodings of the texts when the tokenizer has a Rust backend (the python wrapper's per-encoding
    conversion was a tenth of the time), else (ids, offsets) pairs from the tokenizer call."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.encode_batch(texts, add_special_tokens=False)
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return list(zip(enc["input_ids"], enc["offset_mapping"], strict=True))


def _ids_labels_runs(encoding, spans, plain_text: bool):
    """ids, labels, trained runs and a token -> (start, end) lookup for one encoded row."""
    if isinstance(encoding, tuple):  # no Rust backend: ids and offsets already in Python
        ids, offsets = encoding
        runs = None
    else:
        ids = encoding.ids
        runs = [(0, len(ids))] if plain_text and ids else edge_runs(encoding, len(ids), spans)
        if runs is not None:
            return ids, runs_to_labels(ids, runs), runs, encoding.token_to_chars
        offsets = encoding.offsets
    labels = list(ids) if plain_text else labels_from_offsets(ids, offsets, spans)
    return ids, labels, trained_runs(labels), offsets.__getitem__


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
            text, spans = text_and_spans(chat, row, options)
        except BadRow as exc:
            out[i] = exc
            continue
        texts.append(text)
        spans_of.append(spans)
        where.append(i)
    if texts:
        encoded, decode, normalize = _encode(tokenizer, texts), _decoder(tokenizer), text_normalizer(tokenizer)
        for j, i in enumerate(where):
            plain_text = "text" in rows[i]
            ids, labels, runs, token_chars = _ids_labels_runs(encoded[j], spans_of[j], plain_text)
            try:
                if not plain_text:  # plain text trains every token: nothing to verify
                    if not runs:
                        raise BadRow("no trainable token")
                    verify_runs(texts[j], ids, runs, spans_of[j], token_chars, decode, normalize)
            except BadRow as exc:
                out[i] = exc
                continue
            out[i] = RenderedRow(texts[j], ids, labels, tuple(spans_of[j]))
    return out  # type: ignore[return-value]
