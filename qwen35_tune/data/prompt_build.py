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
import random
from dataclasses import dataclass
from pathlib import Path

from qwen35_tune.data.batch_render import CompiledChat
from qwen35_tune.data.build import CardStats, _bad_fraction_problem, _where_rows_went, _write_stats
from qwen35_tune.data.formats import BadRow, normalise_row
from qwen35_tune.data.hygiene import Hygiene, decontamination_targets
from qwen35_tune.data.mixing import mix_by_weight, split_eval
from qwen35_tune.data.quarantine import Quarantine, reason_key
from qwen35_tune.data.render import thinking_policy
from qwen35_tune.data.row_progress import counted
from qwen35_tune.data.sources import iter_card_rows
from qwen35_tune.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptRow:
    """One GRPO prompt: the text the model continues, its answer check, where it came from, its length in tokens."""

    prompt: str
    check: dict
    origin: str  # "card:file:row"
    tokens: int


def render_prompt(chat: CompiledChat, row: dict, enable_thinking: bool | None) -> str:
    """The prompt text of a canonical verifiable row: its turns and the assistant's generation prompt, rendered by
    the checkpoint's template (Qwen3.5 opens ``<think>`` there in thinking mode, writes an empty block otherwise)."""
    messages, kwargs = thinking_policy(row, enable_thinking)
    return chat.render(messages, None, True, **kwargs)


def prompt_tokens(chat: CompiledChat, row: dict, recipe) -> tuple[str, int]:
    """(prompt text, its length in tokens) of a canonical verifiable row; BadRow if the template refuses it."""
    text = render_prompt(chat, row, recipe.chat.enable_thinking)
    return text, len(chat.tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_budget(recipe) -> int:
    """The longest prompt in tokens: train.max_length bounds prompt + completion."""
    return recipe.train.max_length - recipe.grpo.max_completion_length


def prompt_card(card, recipe, chat: CompiledChat, quarantine: Quarantine, hygiene: Hygiene | None = None,
                is_eval: bool = False) -> tuple[list[PromptRow], CardStats]:
    """Every row of one verifiable card as a PromptRow; bad rows to quarantine (reasons counted in the stats)."""
    stats = CardStats(card.name)
    budget = prompt_budget(recipe)
    kept, lengths = [], []
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
            text, tokens = prompt_tokens(chat, row, recipe)
        except BadRow as exc:
            stats.bad[reason_key(str(exc))] += 1
            quarantine.add(card.name, file, number, str(exc), None if isinstance(raw, BadRow) else raw)
            continue
        if tokens > budget:
            stats.too_long_dropped += 1
            continue
        kept.append(PromptRow(text, row["check"], f"{card.name}:{Path(file).name}:{number}", tokens))
        lengths.append(tokens)
    stats.kept = len(kept)
    _note_lengths(stats, sorted(lengths))
    return kept, stats


def trainable_prompts(rows: list, recipe, tokenizer) -> list:
    """The rows (anything with a canonical verifiable row in ``.canonical``) that ``prompt_card`` keeps after
    hygiene: the template renders them and they fit the prompt budget (the eval replay of held-out rows uses it)."""
    template = Path(recipe.chat.template).read_text(encoding="utf-8") if recipe.chat.template else None
    chat, budget, kept = CompiledChat(tokenizer, template), prompt_budget(recipe), []
    for row in rows:
        try:
            if prompt_tokens(chat, row.canonical, recipe)[1] <= budget:
                kept.append(row)
        except BadRow:
            continue
    return kept


def _note_lengths(stats: CardStats, lengths: list[int]) -> None:
    """Prompt token totals and percentiles (nothing of a prompt is trained: trained_tokens stays 0)."""
    stats.tokens = sum(lengths)
    if lengths:
        pick = lambda q: lengths[min(len(lengths) - 1, int(q * len(lengths)))]  # noqa: E731
        stats.length_percentiles = {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": lengths[-1]}


def build_prompt_datasets(recipe, tokenizer, run_dir: Path | None = None):
    """(train, eval or None, stats) as ``datasets.Dataset`` with columns ``prompt``, ``check`` (JSON) and
    ``origin``; writes data_stats.json and quarantine.jsonl to ``run_dir`` (also when the build fails)."""
    from datasets import Dataset

    template = Path(recipe.chat.template).read_text(encoding="utf-8") if recipe.chat.template else None
    chat = CompiledChat(tokenizer, template)
    rng = random.Random(recipe.seed)
    quarantine = Quarantine(run_dir / "quarantine.jsonl" if run_dir else None)
    decon = recipe.data.decontaminate
    hygiene = Hygiene(recipe.data.dedupe, decon.ngram if decon else 8, decon.max_overlap if decon else None)
    against = decontamination_targets(recipe)
    train_parts, eval_rows, weights, all_stats = [], [], [], []

    def card_rows(card, checked, is_eval=False):
        rows, stats = prompt_card(card, recipe, chat, quarantine, checked, is_eval=is_eval)
        all_stats.append(stats)
        if problem := _bad_fraction_problem(card, stats, quarantine.path):
            raise UserError(problem)
        return rows, stats

    def summary(train_rows: int) -> dict:
        found = {"cards": [s.to_dict() for s in all_stats], "train_rows": train_rows, "eval_rows": len(eval_rows),
                 "stage": "grpo"}
        if decon:
            found["decontamination"] = {"against": sorted(against), "dropped": sum(s.contaminated for s in all_stats)}
        return found

    try:
        for ref, card in recipe.card_pairs("eval"):
            rows, stats = card_rows(card, hygiene if card.name in against else None, is_eval=True)
            rows = rows[: ref.max_samples] if ref.max_samples is not None else rows
            stats.eval = len(rows)
            eval_rows.extend(rows)
        for ref, card in recipe.card_pairs():
            if ref.eval_split is not None:
                source = card.source.model_copy(update={"split": ref.eval_split})
                split_card = card.model_copy(update={"source": source})
                checked = hygiene if decon is not None and decon.against is None else None
                rows, stats = card_rows(split_card, checked, is_eval=True)
                stats.name, stats.eval = f"{card.name} (split {ref.eval_split})", len(rows)
                eval_rows.extend(rows)
        for ref, card in recipe.card_pairs():
            rows, stats = card_rows(card, hygiene)
            train, held_out = split_eval(rows, ref.eval_fraction, rng)
            train = train[: ref.max_samples] if ref.max_samples is not None else train
            stats.train, stats.eval = len(train), len(held_out)
            train_parts.append(train)
            eval_rows.extend(held_out)
            weights.append(ref.weight)
        mixed = mix_by_weight(train_parts, weights, rng)
        if not mixed:
            where = f"; counts in {run_dir / 'data_stats.json'}, rejected rows in {quarantine.path}" if run_dir else ""
            raise UserError(f"no training prompts left after quarantine, hygiene, length and eval holdout{where}:\n"
                            + _where_rows_went(all_stats))
    except UserError as exc:
        if run_dir:
            _write_stats(run_dir, {**summary(0), "error": str(exc)})
        raise
    finally:
        quarantine.close()
    stats = summary(len(mixed))
    if run_dir:
        _write_stats(run_dir, stats)

    def to_dataset(rows: list[PromptRow]):
        return Dataset.from_dict({"prompt": [r.prompt for r in rows], "check": [json.dumps(r.check) for r in rows],
                                  "origin": [r.origin for r in rows]})

    return to_dataset(mixed), (to_dataset(eval_rows) if eval_rows else None), stats
