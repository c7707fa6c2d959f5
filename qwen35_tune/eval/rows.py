"""Eval rows: prompts with their gold answer, tests or reference, from data cards (a recipe's held-out rows, or a
whole card) or the public sets; plus decontamination of eval rows against the training cards.

The held-out rows are found by replaying ``data.build.build_datasets``' own steps (same normalisation, hygiene,
rendering cache and seeded split), so ``qwen35-tune eval`` on a run scores exactly the rows training held out.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from qwen35_tune.data.formats import BadRow, normalise_row
from qwen35_tune.data.hygiene import Hygiene, check_media, decontamination_targets, row_hash
from qwen35_tune.data.messages import text_of
from qwen35_tune.data.mixing import split_eval
from qwen35_tune.data.sources import iter_card_rows
from qwen35_tune.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalRow:
    """One eval item: the prompt conversation and what a correct answer is checked against."""

    prompt: list[dict]
    reference: str = ""  # the card's own final answer (translation reference, QA answer, reference code)
    gold: str | None = None  # the answer to check (math: a `check`/`answer` column, else extracted from reference)
    tests: list[str] | str | None = None  # code: assert lines or a test program
    choices: list[str] | None = None  # multiple-choice QA
    origin: str = ""  # "card:file:row" for messages about the row
    canonical: dict = field(default_factory=dict, compare=False)


def to_eval_row(raw: dict, canonical: dict, origin: str) -> EvalRow:
    """Prompt = every message before the final assistant turn; reference = that turn's content."""
    if "check" in canonical:  # a verifiable row (stage: grpo): all of it is prompt; its check says what is right
        return verifiable_eval_row(canonical, origin)
    messages = canonical["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    gold = raw.get("check", raw.get("gold"))
    tests = raw.get("tests", raw.get("test"))
    choices = raw.get("choices") if isinstance(raw.get("choices"), list) else None
    return EvalRow(prompt=[_prompt_message(m) for m in messages[:last]], reference=text_of(messages[last]["content"]),
                   gold=None if gold is None else str(gold), tests=tests, choices=choices, origin=origin,
                   canonical=canonical)


def verifiable_eval_row(canonical: dict, origin: str) -> EvalRow:
    """An eval row from a canonical verifiable row (data/verifiable.py): math answer, code tests, the labelled
    choice (as its letter) or the reference translation."""
    check = canonical["check"]
    kind, choices = check["kind"], check.get("choices")
    gold = check.get("answer") if kind == "math" else chr(ord("A") + check["label"]) if kind == "choice" else None
    reference = check.get("reference", "") if kind == "translation" else choices[check["label"]] if choices else ""
    return EvalRow(prompt=list(canonical["messages"]), reference=reference, gold=gold, tests=check.get("tests"),
                   choices=choices, origin=origin, canonical=canonical)


def _prompt_message(message: dict) -> dict:
    return {k: v for k, v in message.items() if k != "reasoning_content"}


def card_rows(card) -> list[EvalRow]:
    """Every usable row of a card as an eval row (bad rows are skipped with a count in the log)."""
    rows, bad = [], 0
    for file, number, raw in iter_card_rows(card):
        try:
            if isinstance(raw, BadRow):
                raise raw
            canonical = check_media(normalise_row(raw, card.format, card.columns), card.media_base,
                                    card.media_roots)
        except BadRow:
            bad += 1
            continue
        if "messages" in canonical:
            rows.append(to_eval_row(raw, canonical, f"{card.name}:{Path(file).name}:{number}"))
    if bad:
        log.warning("eval card '%s': %d bad rows skipped", card.name, bad)
    if not rows:
        raise UserError(f"eval card '{card.name}' has no usable conversation rows")
    return rows


def held_out_rows(recipe, tokenizer) -> dict[str, list[EvalRow]]:
    """Eval rows per card name, exactly as build_datasets held them out (eval cards, then eval_fraction holdouts).

    Replays build_datasets' order: eval cards feed decontamination, training rows pass hygiene, rows are rendered
    through the same cache (so rows the renderer or ``too_long: drop`` rejects are left out here too), then the same
    seeded shuffle picks the held-out rows. Hub ``eval_split`` cards are read as their split.
    """
    from qwen35_tune.data.cached_render import render_cache_dir, render_rows_cached

    rng = random.Random(recipe.seed)
    decon = recipe.data.decontaminate
    hygiene = Hygiene(recipe.data.dedupe, decon.ngram if decon else 8, decon.max_overlap if decon else None)
    against = decontamination_targets(recipe)
    out: dict[str, list[EvalRow]] = {}
    for ref, card in recipe.card_pairs("eval"):
        rows = card_rows(card)
        for row in rows:
            if card.name in against:
                hygiene.add_eval_row(row.canonical)
        out[card.name] = rows[: ref.max_samples] if ref.max_samples is not None else rows
    for ref, card in recipe.card_pairs():
        if ref.eval_split is not None:
            split_card = card.model_copy(update={"source": card.source.model_copy(update={"split": ref.eval_split})})
            rows = card_rows(split_card)
            if decon is not None and decon.against is None:  # as build_datasets: split rows feed decontamination
                for row in rows:
                    hygiene.add_eval_row(row.canonical)
            out[f"{card.name} (split {ref.eval_split})"] = rows
    chat, template = recipe.chat, Path(recipe.chat.template).read_text("utf-8") if recipe.chat.template else None
    options = {"train_on": chat.train_on, "mask_empty_think": chat.mask_empty_think,
               "enable_thinking": chat.enable_thinking}
    for ref, card in recipe.card_pairs():
        kept = [row for row in card_rows(card) if not hygiene.drop_reason(row.canonical)]
        if kept and card.format == "verifiable":  # stage: grpo's prompts (data/prompt_build.py keeps the same)
            from qwen35_tune.data.prompt_build import trainable_prompts

            kept = trainable_prompts(kept, recipe, tokenizer)
        elif kept:
            table = render_rows_cached([r.canonical for r in kept], tokenizer, template=template,
                                       cache_dir=render_cache_dir(), **options)
            too_long = recipe.data.too_long == "drop"
            kept = [r for r, ids, problem in zip(kept, table["input_ids"], table["problem"], strict=True)
                    if not problem and not (too_long and len(ids) > recipe.train.max_length)]
        _, held = split_eval(kept, ref.eval_fraction, rng)
        if held:
            out[card.name] = held
    return out


def public_rows(source: str) -> list[EvalRow]:
    """Rows of a public set ('human-eval', 'champ') through eval.public_sets, as eval rows."""
    from qwen35_tune.eval.public_sets import load_eval_rows

    rows = []
    for i, raw in enumerate(load_eval_rows(source)):
        if "messages" in raw:
            canonical = normalise_row(raw, "messages")
            rows.append(to_eval_row(raw, canonical, f"{source}:{raw.get('id', i)}"))
            continue
        prompt = raw.get("prompt") or raw.get("question") or raw.get("problem")
        if not prompt:
            raise UserError(f"public set '{source}': row {i} has no prompt/question")
        gold = raw.get("gold", raw.get("answer"))
        rows.append(EvalRow(prompt=[{"role": "user", "content": prompt}], reference=str(raw.get("reference", "")),
                            gold=None if gold is None else str(gold), tests=raw.get("tests", raw.get("test")),
                            choices=raw.get("choices"), origin=f"{source}:{raw.get('id', i)}",
                            canonical={"messages": [{"role": "user", "content": prompt}]}))
    return rows


def contaminated(rows: list[EvalRow], recipe, ngram: int = 8, max_overlap: float = 0.5) -> dict[str, list[str]]:
    """Origins of eval rows that repeat a training row exactly ('exact', case/space-normalised) or share at least
    ``max_overlap`` of their word n-grams with the training rows ('ngram', which includes the exact ones).

    The training rows are the training cards' rows minus the eval rows themselves (a held-out row is still in its
    card's file). Reported, not removed: rows of a templated card share phrasing with training rows by design, so
    'ngram' can be high there while 'exact' is the figure that says an answer could have been memorised.
    """
    decon = recipe.data.decontaminate
    hygiene = Hygiene(False, decon.ngram if decon else ngram, decon.max_overlap if decon else max_overlap)
    evaluated, training = {row.origin for row in rows}, set()
    for _, card in recipe.card_pairs():
        for row in card_rows(card):
            if row.origin not in evaluated:
                hygiene.add_eval_row(_full_row(row))  # training rows play Hygiene's "eval" side here
                training.add(row_hash(_full_row(row)))
    return {"exact": [row.origin for row in rows if row_hash(_full_row(row)) in training],
            "ngram": [row.origin for row in rows if hygiene.drop_reason(_full_row(row)) == "contaminated"]}


def _full_row(row: EvalRow) -> dict:
    """The eval row as a conversation (prompt + reference) so its whole text is compared."""
    messages = list(row.prompt) + ([{"role": "assistant", "content": row.reference}] if row.reference else [])
    return {"messages": messages}
