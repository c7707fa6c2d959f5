"""Verifiable cards -> the prompt datasets of ``stage: grpo``: each prompt rendered with the checkpoint's chat
template up to the assistant's generation prompt (thinking on or off per ``chat.thinking``, a row's own
``enable_thinking`` winning), with its answer check beside it.

The same run-directory records and rules as the SFT data build (``data.build``): bad rows go to quarantine.jsonl
with card, file, row number and reason; a card past its ``max_bad_fraction`` stops the run; duplicates and eval
overlap are counted in data_stats.json; eval cards and ``eval_fraction`` hold rows out; cards mix by weight. A prompt
is never cut (the question would be lost): one longer than ``train.max_length`` minus ``grpo.max_completion_length``
is left out and counted as too long, whatever ``data.too_long`` says.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from qwen35_tune.data.batch_render import CompiledChat
from qwen35_tune.data.build import CardStats
from qwen35_tune.data.formats import BadRow, normalise_row
from qwen35_tune.data.hygiene import Hygiene
from qwen35_tune.data.quarantine import Quarantine, reason_key
from qwen35_tune.data.render import thinking_policy
from qwen35_tune.data.row_progress import counted
from qwen35_tune.data.sources import iter_card_rows
from qwen35_tune.recipe.grpo_section import grpo_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptRow:
    """One GRPO prompt: the text the model continues, its answer check, where it came from, its length in tokens."""

    prompt: str
    check: dict
    origin: str  # "card:file:row"
    input_ids: list[int]  # the prompt's tokens (``CardStats.note_lengths`` reads their count)
    n_trained = 0  # nothing of a prompt is trained on


def render_prompt(chat: CompiledChat, row: dict, enable_thinking: bool | None) -> str:
    """The prompt text of a canonical verifiable row: its turns and the assistant's generation prompt, rendered by
    the checkpoint's template (Qwen3.5 opens ``<think>`` there in thinking mode, writes an empty block otherwise)."""
    messages, kwargs = thinking_policy(row, enable_thinking)
    return chat.render(messages, None, True, **kwargs)


def prompt_tokens(chat: CompiledChat, row: dict, recipe) -> tuple[str, list[int]]:
    """(prompt text, its token ids) of a canonical verifiable row; BadRow if the template refuses it."""
    text = render_prompt(chat, row, recipe.chat.enable_thinking)
    return text, chat.tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_budget(recipe) -> int:
    """The longest prompt in tokens: train.max_length bounds prompt + completion."""
    return recipe.train.max_length - grpo_settings(recipe).max_completion_length


def prompt_card(card, recipe, chat: CompiledChat, quarantine: Quarantine, hygiene: Hygiene | None = None,
                is_eval: bool = False) -> tuple[list[PromptRow], CardStats]:
    """Every row of one verifiable card as a PromptRow; bad rows to quarantine (reasons counted in the stats)."""
    stats = CardStats(card.name)
    budget = prompt_budget(recipe)
    kept = []
    for file, number, raw in counted(iter_card_rows(card), card.name):
        stats.rows += 1
        try:
            if isinstance(raw, BadRow):
                raise raw
            row = normalise_row(raw, card.format, card.columns)
            if hygiene is not None and is_eval:
                hygiene.add_eval_row(row)
            elif hygiene is not None and (dropped := hygiene.drop_reason(row)):
                setattr(stats, dropped, getattr(stats, dropped) + 1)
                continue
            text, ids = prompt_tokens(chat, row, recipe)
        except BadRow as exc:
            stats.bad[reason_key(str(exc))] += 1
            quarantine.add(card.name, file, number, str(exc), None if isinstance(raw, BadRow) else raw)
            continue
        if len(ids) > budget:
            stats.too_long_dropped += 1
            continue
        kept.append(PromptRow(text, row["check"], f"{card.name}:{Path(file).name}:{number}", ids))
    stats.kept = len(kept)
    return kept, stats


def trainable_prompts(rows: list, recipe, tokenizer) -> list:
    """The rows (anything with a canonical verifiable row in ``.canonical``) that ``prompt_card`` keeps after
    hygiene: the template renders them and they fit the prompt budget (the eval replay of held-out rows uses it)."""
    template = Path(recipe.chat.template).read_text(encoding="utf-8") if recipe.chat.template else None
    chat, budget, kept = CompiledChat(tokenizer, template), prompt_budget(recipe), []
    for row in rows:
        try:
            if len(prompt_tokens(chat, row.canonical, recipe)[1]) <= budget:
                kept.append(row)
        except BadRow:
            continue
    return kept


def render_prompt_card(card, recipe, tokenizer, quarantine: Quarantine, hygiene: Hygiene | None = None,
                       is_eval: bool = False, processor=None) -> tuple[list[PromptRow], CardStats]:
    """``prompt_card`` with the signature ``data.build.build_datasets`` calls its row renderer with (a verifiable
    prompt is text: ``processor`` is not used)."""
    template = Path(recipe.chat.template).read_text(encoding="utf-8") if recipe.chat.template else None
    return prompt_card(card, recipe, CompiledChat(tokenizer, template), quarantine, hygiene, is_eval=is_eval)


def prompt_columns(rows: list[PromptRow]) -> tuple[dict[str, list], None]:
    """(columns, features) for ``datasets.Dataset.from_dict``: ``prompt`` (the rendered text TRL generates from),
    ``check`` (JSON, read by the rewards) and ``origin`` (card:file:row, for the completions sample)."""
    return {"prompt": [r.prompt for r in rows], "check": [json.dumps(r.check) for r in rows],
            "origin": [r.origin for r in rows]}, None


def build_prompt_datasets(recipe, tokenizer, run_dir: Path | None = None):
    """(train, eval or None, stats) as ``datasets.Dataset`` with columns ``prompt``, ``check`` and ``origin``: the
    SFT data build's mixing, holdout, hygiene, quarantine and stats (``data.build.build_datasets``) over prompts."""
    from qwen35_tune.data.build import build_datasets

    return build_datasets(recipe, tokenizer, run_dir, render=render_prompt_card, to_columns=prompt_columns)
