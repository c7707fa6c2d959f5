"""A few training rows rendered and masked exactly as training did (the ``preview`` view, for the page): the first
rows of each card, plus a row with reasoning and a row with tool calls where the data has them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from qwen35_tune.data.bad_row import BadRow
from qwen35_tune.data.messages import text_of
from qwen35_tune.data.preview import canonical_row, chat_template_text, preview_row, token_pieces
from qwen35_tune.data.sources import iter_card_rows
from qwen35_tune.rundir import RunDir

log = logging.getLogger(__name__)

PER_CARD = 3  # first good rows shown of every card
SCAN = 400  # rows of a card looked at for a reasoning row and a tool row
MAX_ROWS = 10
MAX_TOKENS = 1500  # tokens shown of one row (the rest is counted)


@dataclass(frozen=True)
class ShownRow:
    """One rendered row: where it came from, why it was picked, and its tokens (text, trained, in reasoning)."""

    card: str
    source: str
    number: int
    kinds: tuple[str, ...]
    tokens: list[tuple[str, bool, bool]]
    n_tokens: int
    n_trained: int


def row_kinds(row: dict) -> set[str]:
    """'thinking' for a row with reasoning, 'tool' for one with tools, tool calls or tool results."""
    kinds = set()
    for message in row.get("messages", []):
        if message.get("reasoning_content") or (message.get("role") == "assistant"
                                                and "<think>" in text_of(message.get("content"))):
            kinds.add("thinking")
        if message.get("tool_calls") or message.get("role") == "tool":
            kinds.add("tool")
    if row.get("tools"):
        kinds.add("tool")
    return kinds


def _tokenizer_folder(run: RunDir) -> Path | None:
    """Where the tokenizer and chat template the run trained with are: its weights, else its newest checkpoint."""
    folders = [run.adapter, run.model]
    if run.checkpoints.is_dir():
        folders += sorted(run.checkpoints.glob("checkpoint-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((f for f in folders if f.is_dir() and any(f.glob("tokenizer*"))), None)


def load_run_tokenizer(run: RunDir, recipe):
    """(tokenizer, template or None, where from); the base model's with the recipe's template when the run saved
    none (a run that failed before its first checkpoint)."""
    from qwen35_tune.models.load import load_tokenizer, resolve_model_path

    folder = _tokenizer_folder(run)
    if folder is not None:
        return load_tokenizer(str(folder)), None, str(folder)
    path = resolve_model_path(recipe.model.name_or_path)
    template = chat_template_text(recipe.chat)
    return load_tokenizer(path, recipe.model.revision, template), template, recipe.model.name_or_path


def pick_rows(recipe, tokenizer, template: str | None) -> list[ShownRow]:
    """The rows to show (see the module doc), rendered with ``tokenizer``."""
    picked: list[tuple] = []
    missing = {"thinking", "tool"}
    for _, card in recipe.card_pairs():
        plain = 0
        for index, (source, number, raw) in enumerate(iter_card_rows(card)):
            if index >= SCAN or len(picked) >= MAX_ROWS or (plain >= PER_CARD and not missing):
                break
            try:
                kinds = row_kinds(canonical_row(card, raw))
            except BadRow:
                continue
            wanted = kinds & missing
            if plain < PER_CARD or wanted:
                picked.append((card, source, number, raw, tuple(sorted(kinds))))
                missing -= wanted
                plain += 1
    return [shown for shown in (_render(tokenizer, recipe.chat, template, *p) for p in picked) if shown is not None]


def _render(tokenizer, chat, template, card, source, number, raw, kinds) -> ShownRow | None:
    item = preview_row(card, chat, template, tokenizer, source, number, raw)
    if item.row is None:  # refused by the template: it is in the quarantine table instead
        return None
    pieces = token_pieces(item.row, tokenizer)
    return ShownRow(card.name, source, number, kinds, pieces[:MAX_TOKENS], len(pieces), item.row.n_trained)
