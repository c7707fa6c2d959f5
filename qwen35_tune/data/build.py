"""Data cards → tokenised train/eval datasets: normalise, render with masks, quarantine bad rows, mix by weight."""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from qwen35_tune import strict_json
from qwen35_tune.data.cached_render import render_cache_dir, render_rows_cached
from qwen35_tune.data.formats import BadRow, normalise_row
from qwen35_tune.data.hygiene import Hygiene, check_media
from qwen35_tune.data.render import RenderedRow
from qwen35_tune.data.render_media import MultimodalRow, dataset_columns, render_rows_with_media
from qwen35_tune.data.row_progress import counted
from qwen35_tune.data.sources import iter_card_rows
from qwen35_tune.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class CardStats:
    """What happened to one card's rows; written to data_stats.json so users see where rows went."""

    name: str
    rows: int = 0
    kept: int = 0
    bad: Counter = field(default_factory=Counter)
    truncated: int = 0
    too_long_dropped: int = 0
    duplicate: int = 0
    contaminated: int = 0
    train: int = 0
    eval: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    length_percentiles: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**{k: v for k, v in self.__dict__.items() if k != "bad"}, "bad": dict(self.bad)}

    def note_lengths(self, rows: list[RenderedRow]) -> None:
        """Token totals and length percentiles of the kept rows (what `data stats` shows per card)."""
        lengths = sorted(len(r.input_ids) for r in rows)
        self.tokens, self.trained_tokens = sum(lengths), sum(r.n_trained for r in rows)
        if lengths:
            pick = lambda q: lengths[min(len(lengths) - 1, int(q * len(lengths)))]  # noqa: E731
            self.length_percentiles = {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": lengths[-1]}


class Quarantine:
    """Append-only jsonl of rejected rows with card name, file, row number and reason (nothing is silently lost)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._fh = path.open("w", encoding="utf-8") if path else None

    def add(self, card: str, file: str, row: int, reason: str, raw) -> None:
        if self._fh:
            record = {"card": card, "file": file, "row": row, "reason": reason, "raw": raw}
            self._fh.write(strict_json.dumps(record, ensure_ascii=False, default=str) + "\n")

    def close(self) -> None:
        if self._fh:
            self._fh.close()


def _reason_key(reason: str) -> str:
    """Group reasons for counting ("message 3: unknown role 'bot'" → "unknown role", "message 0 is not an object"
    → "message N is not an object")."""
    text = re.sub(r"^(?:message|turn) \d+: ", "", reason)
    text = re.sub(r"\b(message|turn|part) \d+\b", r"\1 N", text)
    return text.split(" (")[0].split(":")[0].split(" '")[0].split(" {")[0]


def render_card(
    card, recipe, tokenizer, quarantine: Quarantine, hygiene: Hygiene | None = None, is_eval: bool = False,
    processor=None,
) -> tuple[list[RenderedRow], CardStats]:
    """Every row of one card, rendered and masked; bad rows go to quarantine and fail the run past the threshold.

    Training rows pass ``hygiene`` (duplicates, eval overlap: counted, not quarantined); eval rows feed it.
    Rows with images/videos need ``processor`` (``models.processor.load_processor``; a string = why there is none).
    """
    stats = CardStats(card.name)
    chat, max_length = recipe.chat, recipe.train.max_length
    template = Path(chat.template).read_text(encoding="utf-8") if chat.template else None
    kept: list[tuple[str, int, dict]] = []  # (file, row number, raw row) of the rows sent to the renderer
    canonical: list[dict] = []
    rejected: list[tuple[str, int, str, object]] = []  # (file, row number, reason, raw row) for the quarantine
    media_base = card.media_base
    for file, number, raw in counted(iter_card_rows(card), card.name):
        stats.rows += 1
        try:
            if isinstance(raw, BadRow):
                raise raw
            row = check_media(normalise_row(raw, card.format, card.columns), media_base)
        except BadRow as exc:
            stats.bad[_reason_key(str(exc))] += 1
            rejected.append((file, number, str(exc), None if isinstance(raw, BadRow) else raw))
            continue
        if hygiene is not None and is_eval:
            hygiene.add_eval_row(row)
        elif hygiene is not None and (dropped := hygiene.drop_reason(row)):
            setattr(stats, dropped, getattr(stats, dropped) + 1)
            continue
        kept.append((file, number, raw))
        canonical.append(row)
    # Multi-process and cached on disk (key: rows, tokenizer, template, chat options); bad rows come back with
    # their reasons in 'problem', in row order, so quarantine and counts stay exact.
    options = {"train_on": chat.train_on, "mask_empty_think": chat.mask_empty_think,
               "enable_thinking": chat.enable_thinking}
    columns = {"input_ids": [], "labels": [], "problem": [], "multimodal": []}
    if canonical:
        def render_text(rows):
            return render_rows_cached(rows, tokenizer, template=template, cache_dir=render_cache_dir(), **options)

        columns = render_rows_with_media(canonical, render_text, processor, tokenizer, recipe.model.vision,
                                         card.name, template=template, **options)  # fmt: skip
    rows: list[RenderedRow] = []
    for (file, number, raw), ids, labels, problem, multimodal in zip(
        kept, columns["input_ids"], columns["labels"], columns["problem"], columns["multimodal"], strict=True
    ):
        try:
            if problem:
                raise BadRow(problem)
            rendered = multimodal or RenderedRow("", ids, labels, ())
            if len(ids) > max_length and recipe.data.too_long == "drop":
                stats.too_long_dropped += 1
                continue
            if len(ids) > max_length:
                rendered = _truncate(rendered, max_length)
                stats.truncated += 1
        except BadRow as exc:
            stats.bad[_reason_key(str(exc))] += 1
            rejected.append((file, number, str(exc), raw))
            continue
        rows.append(rendered)
    order = {file: i for i, file in enumerate(dict.fromkeys(r[0] for r in rejected))}
    for file, number, reason, raw in sorted(rejected, key=lambda r: (order[r[0]], r[1])):  # in file order
        quarantine.add(card.name, file, number, reason, raw)
    stats.kept = len(rows)
    _check_bad_fraction(card, stats)
    return rows, stats


def _truncate(row: RenderedRow, max_length: int) -> RenderedRow:
    if isinstance(row, MultimodalRow):  # cutting vision tokens would leave pixels without their placeholders
        raise BadRow(f"row with images/videos is {len(row.input_ids)} tokens, over train.max_length={max_length}; "
                     "raise train.max_length or lower model.vision.max_pixels")
    truncated = RenderedRow(row.text, row.input_ids[:max_length], row.labels[:max_length], row.spans)
    if truncated.n_trained == 0:
        raise BadRow(f"no trainable token within train.max_length={max_length}")
    return truncated


def _check_bad_fraction(card, stats: CardStats) -> None:
    if stats.rows == 0:
        raise UserError(f"data card '{card.name}': its source has no rows ({', '.join(card.source_paths)})")
    bad = sum(stats.bad.values())
    if bad / stats.rows > card.max_bad_fraction:
        reasons = "\n".join(f"  {n:6d}  {reason}" for reason, n in stats.bad.most_common())
        raise UserError(
            f"data card '{card.name}': {bad} of {stats.rows} rows are bad ({bad / stats.rows:.1%}), more than its "
            f"max_bad_fraction {card.max_bad_fraction:.1%}. The rows are in the run's quarantine.jsonl. "
            f"Reasons:\n{reasons}"
        )


def _split_eval(rows: list, fraction: float, rng: random.Random) -> tuple[list, list]:
    if fraction <= 0:
        return rows, []
    order = list(range(len(rows)))
    rng.shuffle(order)
    n_eval = max(1, round(len(rows) * fraction))
    eval_idx = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in eval_idx], [rows[i] for i in sorted(eval_idx)]


def mix_by_weight(per_card: list[list], weights: list[float], rng: random.Random) -> list:
    """Mix cards in proportion to their weights; equal weights keep every row once (a plain concatenation).

    With unequal weights the mix keeps the total row count and gives card i ``total * w_i / sum(w)`` rows,
    sampling without replacement when it has enough and repeating rows (upsampling) when it has too few.
    """
    if len(set(weights)) <= 1:
        return [row for rows in per_card for row in rows]
    total, weight_sum = sum(len(rows) for rows in per_card), sum(weights)
    mixed: list = []
    for rows, weight in zip(per_card, weights, strict=True):
        want = round(total * weight / weight_sum)
        if not rows or want == 0:
            continue
        repeats, rest = divmod(want, len(rows))
        mixed.extend(rows * repeats + rng.sample(rows, rest))
    rng.shuffle(mixed)
    return mixed


def _decontamination_targets(recipe) -> set[str]:
    """Names of the eval cards training rows are checked against (data.decontaminate.against; default all)."""
    pairs = recipe.card_pairs("eval")
    names = {card.name for _, card in pairs}
    decon = recipe.data.decontaminate
    if decon is None or decon.against is None:
        return names
    chosen = set()
    for wanted in decon.against:
        tail = Path(wanted).parts  # a path as written in the recipe (stored absolute) matches by its last parts
        match = [card.name for ref, card in pairs if wanted == card.name or Path(ref.path).parts[-len(tail):] == tail]
        if not match:
            raise UserError(f"data.decontaminate.against: '{wanted}' is not one of data.eval_cards "
                            f"({', '.join(sorted(names)) or 'none given'}); give a card name or its path")
        chosen.update(match)
    return chosen


def build_datasets(recipe, tokenizer, run_dir: Path | None = None, processor=None):
    """Build (train, eval or None, stats) as ``datasets.Dataset`` with ``input_ids`` and ``labels`` columns."""
    from datasets import Dataset

    rng = random.Random(recipe.seed)
    quarantine = Quarantine(run_dir / "quarantine.jsonl" if run_dir else None)
    train_parts, eval_rows, weights, all_stats = [], [], [], []
    decon = recipe.data.decontaminate
    hygiene = Hygiene(recipe.data.dedupe, decon.ngram if decon else 8, decon.max_overlap if decon else None)
    against = _decontamination_targets(recipe)
    try:
        for ref, card in recipe.card_pairs("eval"):  # first, so training rows can be checked against them
            checked = hygiene if card.name in against else None
            rows, stats = render_card(card, recipe, tokenizer, quarantine, checked, is_eval=True, processor=processor)
            rows = rows[: ref.max_samples] if ref.max_samples is not None else rows
            stats.eval = len(rows)
            stats.note_lengths(rows)
            eval_rows.extend(rows)
            all_stats.append(stats)
        for ref, card in recipe.card_pairs():  # Hub cards' eval splits are eval rows too, read before training rows
            if ref.eval_split is not None:
                source = card.source.model_copy(update={"split": ref.eval_split})
                split_card = card.model_copy(update={"source": source})
                checked = hygiene if decon is not None and decon.against is None else None
                rows, stats = render_card(split_card, recipe, tokenizer, quarantine, checked, is_eval=True,
                                          processor=processor)
                stats.name = f"{card.name} (split {ref.eval_split})"
                stats.eval = len(rows)
                stats.note_lengths(rows)
                eval_rows.extend(rows)
                all_stats.append(stats)
        for ref, card in recipe.card_pairs():
            rows, stats = render_card(card, recipe, tokenizer, quarantine, hygiene, processor=processor)
            train, held_out = _split_eval(rows, ref.eval_fraction, rng)
            if ref.max_samples is not None:
                train = train[: ref.max_samples]
            stats.train, stats.eval = len(train), len(held_out)
            stats.note_lengths(rows)
            train_parts.append(train)
            eval_rows.extend(held_out)
            weights.append(ref.weight)
            all_stats.append(stats)
    finally:
        quarantine.close()
    mixed = mix_by_weight(train_parts, weights, rng)
    if not mixed:
        raise UserError("no training rows left after quarantine and eval holdout; see data_stats.json")

    def to_dataset(rows: list[RenderedRow]):
        columns, features = dataset_columns(rows)  # text-only rows: input_ids and labels, as before
        return Dataset.from_dict(columns, features=features)

    stats = {"cards": [s.to_dict() for s in all_stats], "train_rows": len(mixed), "eval_rows": len(eval_rows)}
    if decon:
        stats["decontamination"] = {"against": sorted(against),
                                    "dropped": sum(s.contaminated for s in all_stats)}
    if run_dir:
        (run_dir / "data_stats.json").write_text(strict_json.dumps(stats, indent=2))
    return to_dataset(mixed), (to_dataset(eval_rows) if eval_rows else None), stats
