"""Data cards → tokenised train/eval datasets: normalise, render with masks, quarantine bad rows, mix by weight.

The top layer of the data pipeline (imports point down only): one card's rows go through the cached batch maps
(``cached_render`` for text, ``cached_media_render`` for images/videos), which map the per-row renderers
(``batch_render``/``render`` and ``render_media``) over them.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from qwen35_tune import strict_json
from qwen35_tune.data.cached_media_render import render_media_rows
from qwen35_tune.data.cached_render import render_cache_dir, render_rows_cached
from qwen35_tune.data.chunking import chunk_row
from qwen35_tune.data.formats import BadRow, normalise_row
from qwen35_tune.data.hygiene import Hygiene, check_media, decontamination_targets
from qwen35_tune.data.mixing import mix_by_weight, split_eval
from qwen35_tune.data.quarantine import Quarantine, reason_key
from qwen35_tune.data.render import RenderedRow
from qwen35_tune.data.render_media import GRID_KEYS, REF_KEYS, MultimodalRow, has_media
from qwen35_tune.data.row_progress import counted
from qwen35_tune.data.sources import iter_card_rows
from qwen35_tune.data.text_filters import DocumentChecks, TextRowChecks
from qwen35_tune.errors import UserError
from qwen35_tune.models.processor import missing_processor

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
    near_duplicate: int = 0  # format: text documents (data.near_dedupe) and the card's filters:
    language: int = 0
    length: int = 0
    chunked: int = 0  # documents longer than train.max_length, trained as several chunks (data.chunking)
    train: int = 0
    eval: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    length_percentiles: dict = field(default_factory=dict)
    length_histogram: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**{k: v for k, v in self.__dict__.items() if k != "bad"}, "bad": dict(self.bad)}

    def note_lengths(self, rows: list[RenderedRow]) -> None:
        """Token totals and length percentiles of the kept rows (what `data stats` shows per card)."""
        lengths = sorted(len(r.input_ids) for r in rows)
        self.tokens, self.trained_tokens = sum(lengths), sum(r.n_trained for r in rows)
        if lengths:
            pick = lambda q: lengths[min(len(lengths) - 1, int(q * len(lengths)))]  # noqa: E731
            self.length_percentiles = {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": lengths[-1]}
        self.length_histogram = length_histogram(lengths)


# Bins of a power-of-two width, so the histograms of several cards add up after merging neighbouring bins.
HISTOGRAM_BINS = 64


def length_histogram(lengths: list[int]) -> dict:
    """Token lengths in at most HISTOGRAM_BINS bins from 0: ``{"bin_width": 2**k, "counts": [...]}`` (the run report
    draws it; ``counts[i]`` rows have ``i * bin_width <= length < (i + 1) * bin_width``)."""
    if not lengths:
        return {}
    width = 1
    while (max(lengths) // width) + 1 > HISTOGRAM_BINS:
        width *= 2
    counts = [0] * ((max(lengths) // width) + 1)
    for length in lengths:
        counts[length // width] += 1
    return {"bin_width": width, "counts": counts}


def render_card(
    card, recipe, tokenizer, quarantine: Quarantine, hygiene: Hygiene | None = None, is_eval: bool = False,
    processor=None, text_checks: TextRowChecks | None = None,
) -> tuple[list[RenderedRow], CardStats]:
    """Every row of one card, rendered and masked; bad rows go to quarantine and fail the run past the threshold.

    Training rows pass ``hygiene`` (duplicates, eval overlap: counted, not quarantined); eval rows feed it.
    A format: text card's documents also pass ``text_checks`` (near-duplicates, its filters) and are never cut: the
    caller splits those over train.max_length into chunks (``data.chunking``).
    Rows with images/videos need ``processor`` (``models.processor.processor_for_run``: a processor, or a
    ``NoProcessor`` saying why there is none).
    """
    stats = CardStats(card.name)
    chat, max_length = recipe.chat, recipe.train.max_length
    template = Path(chat.template).read_text(encoding="utf-8") if chat.template else None
    kept: list[tuple[str, int, dict]] = []  # (file, row number, raw row) of the rows sent to the renderer
    canonical: list[dict] = []
    rejected: list[tuple[str, int, str, object]] = []  # (file, row number, reason, raw row) for the quarantine
    media_base, media_roots = card.media_base, card.media_roots
    for file, number, raw in counted(iter_card_rows(card), card.name):
        stats.rows += 1
        try:
            if isinstance(raw, BadRow):
                raise raw
            row = check_media(normalise_row(raw, card.format, card.columns), media_base, media_roots)
        except BadRow as exc:
            stats.bad[reason_key(str(exc))] += 1
            rejected.append((file, number, str(exc), None if isinstance(raw, BadRow) else raw))
            continue
        if hygiene is not None and is_eval:
            hygiene.add_eval_row(row)
        elif hygiene is not None and (dropped := hygiene.drop_reason(row)):
            setattr(stats, dropped, getattr(stats, dropped) + 1)
            continue
        if text_checks is not None and not is_eval and (dropped := text_checks.drop_reason(row["text"])):
            setattr(stats, dropped, getattr(stats, dropped) + 1)
            continue
        kept.append((file, number, raw))
        canonical.append(row)
    # Multi-process and cached on disk (key: rows, tokenizer, template, chat options); bad rows come back with
    # their reasons in 'problem', in row order, so quarantine and counts stay exact.
    options = {"train_on": chat.train_on, "mask_empty_think": chat.mask_empty_think,
               "enable_thinking": chat.enable_thinking}
    columns = render_columns(canonical, processor, tokenizer, recipe.model.vision, card.name, template, options)
    rows: list[RenderedRow] = []
    for (file, number, raw), ids, labels, problem, multimodal in zip(
        kept, columns["input_ids"], columns["labels"], columns["problem"], columns["multimodal"], strict=True
    ):
        try:
            if problem:
                raise BadRow(problem)
            rendered = multimodal or RenderedRow("", ids, labels, ())
            too_long = len(ids) > max_length and card.format != "text"  # documents are chunked, never cut
            if too_long and recipe.data.too_long == "drop":
                stats.too_long_dropped += 1
                continue
            if too_long:
                rendered = _truncate(rendered, max_length)
                stats.truncated += 1
        except BadRow as exc:
            stats.bad[reason_key(str(exc))] += 1
            rejected.append((file, number, str(exc), raw))
            continue
        rows.append(rendered)
    order = {file: i for i, file in enumerate(dict.fromkeys(r[0] for r in rejected))}
    for file, number, reason, raw in sorted(rejected, key=lambda r: (order[r[0]], r[1])):  # in file order
        quarantine.add(card.name, file, number, reason, raw)
    stats.kept = len(rows)
    return rows, stats


def render_columns(canonical: list[dict], processor, tokenizer, settings, card_name: str, template: str | None,
                    options: dict) -> dict[str, list]:
    """Columns ``input_ids``, ``labels``, ``problem`` and ``multimodal`` (a MultimodalRow or None) in row order.

    Text rows go through the cached text map in one call, rows with media through the cached media map.
    Media rows without a processor (a ``NoProcessor``: a text-only checkpoint, or no torchvision; None counts as
    text-only) are a UserError naming the card and why there is none.
    """
    media_idx = [i for i, row in enumerate(canonical) if has_media(row)]
    missing = missing_processor(processor)
    if media_idx and missing is not None:
        raise UserError(f"data card '{card_name}': {len(media_idx)} rows have images or videos, but {missing.reason}")
    media_set = set(media_idx)
    text_idx = [i for i in range(len(canonical)) if i not in media_set]
    n = len(canonical)
    columns: dict[str, list] = {"input_ids": [None] * n, "labels": [None] * n, "problem": [None] * n,
                                "multimodal": [None] * n}  # fmt: skip
    if text_idx:
        # Whole columns at once: indexing the Dataset per row rebuilt a view and copied its features every time (11 s
        # of a 20k-row card's 14 s build, measured).
        table = render_rows_cached([canonical[i] for i in text_idx], tokenizer, template=template,
                                   cache_dir=render_cache_dir(), **options).to_dict()  # fmt: skip
        for name in ("input_ids", "labels", "problem"):
            for i, value in zip(text_idx, table[name], strict=True):
                columns[name][i] = value
    rendered = render_media_rows([canonical[i] for i in media_idx], processor, tokenizer, settings,
                                 cache_dir=render_cache_dir(), template=template, **options)  # fmt: skip
    for i, row in zip(media_idx, rendered, strict=True):
        if isinstance(row, BadRow):
            columns["problem"][i] = str(row)
            continue
        columns["input_ids"][i], columns["labels"][i], columns["multimodal"][i] = row.input_ids, row.labels, row
    return columns


def _truncate(row: RenderedRow, max_length: int) -> RenderedRow:
    if isinstance(row, MultimodalRow):  # cutting vision tokens would leave pixels without their placeholders
        raise BadRow(f"row with images/videos is {len(row.input_ids)} tokens, over train.max_length={max_length}; "
                     "raise train.max_length or lower model.vision.max_pixels")
    truncated = RenderedRow(row.text, row.input_ids[:max_length], row.labels[:max_length], row.spans)
    if truncated.n_trained == 0:
        raise BadRow(f"no trainable token within train.max_length={max_length}")
    return truncated


def _bad_fraction_problem(card, stats: CardStats, quarantine: Path | None) -> str | None:
    """Why a card fails the run (no rows, or more bad rows than its max_bad_fraction), else None."""
    if stats.rows == 0:
        return f"data card '{card.name}': its source has no rows ({', '.join(card.source_paths) or card.source.hub})"
    bad = sum(stats.bad.values())
    if bad / stats.rows <= card.max_bad_fraction:
        return None
    reasons = "\n".join(f"  {n:6d}  {reason}" for reason, n in stats.bad.most_common())
    where = f"The rows, with file, row number and reason, are in {quarantine}. " if quarantine else ""
    return (f"data card '{card.name}': {bad} of {stats.rows} rows are bad ({bad / stats.rows:.1%}), more than its "
            f"max_bad_fraction {card.max_bad_fraction:.1%}. {where}Reasons:\n{reasons}")


def _where_rows_went(all_stats: list[CardStats]) -> str:
    """Per card, one line of where its rows went (for the 'no training rows left' error)."""
    lines = []
    for stats in all_stats:
        counts = {"bad": sum(stats.bad.values()), "duplicates": stats.duplicate,
                  "overlapping eval": stats.contaminated, "too long": stats.too_long_dropped,
                  "held out for eval": stats.eval}  # fmt: skip
        lost = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
        lines.append(f"  {stats.name}: {stats.rows} rows" + (f" ({lost})" if lost else ""))
    return "\n".join(lines)


def build_datasets(recipe, tokenizer, run_dir: Path | None = None, processor=None, *, render=None, to_columns=None):
    """Build (train, eval or None, stats) as ``datasets.Dataset`` with ``input_ids`` and ``labels`` columns.

    A run that cannot go on (a card past its max_bad_fraction, or no training rows left) still writes
    data_stats.json (with the ``error``) and quarantine.jsonl to ``run_dir`` before the UserError.
    ``render`` / ``to_columns``: another stage's row renderer (``render_card``'s signature) and dataset columns
    (``dataset_columns``'), e.g. preference pairs (``data.preference_build``); the mixing, holdout, hygiene,
    quarantine and stats around them are the same.
    """
    render, to_columns = render or render_card, to_columns or dataset_columns

    rng = random.Random(recipe.seed)
    quarantine = Quarantine(run_dir / "quarantine.jsonl" if run_dir else None)
    train_parts, eval_rows, weights, all_stats = [], [], [], []
    decon = recipe.data.decontaminate
    hygiene = Hygiene(recipe.data.dedupe, decon.ngram if decon else 8, decon.max_overlap if decon else None)
    against = decontamination_targets(recipe)

    def card_rows(card, checked, is_eval=False, text_checks=None):
        extra = {"text_checks": text_checks} if text_checks is not None else {}  # format: text cards only
        rows, stats = render(card, recipe, tokenizer, quarantine, checked, is_eval=is_eval, processor=processor,
                             **extra)  # fmt: skip
        all_stats.append(stats)
        if problem := _bad_fraction_problem(card, stats, quarantine.path):
            raise UserError(problem)
        return rows, stats

    def summary(train_rows: int) -> dict:
        stats = {"cards": [s.to_dict() for s in all_stats], "train_rows": train_rows, "eval_rows": len(eval_rows)}
        if decon:
            stats["decontamination"] = {"against": sorted(against), "dropped": sum(s.contaminated for s in all_stats)}
        return stats

    try:
        for ref, card in recipe.card_pairs("eval"):  # first, so training rows can be checked against them
            rows, stats = card_rows(card, hygiene if card.name in against else None, is_eval=True)
            rows = rows[: ref.max_samples] if ref.max_samples is not None else rows
            stats.eval = len(rows)
            stats.note_lengths(rows)
            eval_rows.extend(_chunked(rows, recipe, card, stats))
        for ref, card in recipe.card_pairs():  # Hub cards' eval splits are eval rows too, read before training rows
            if ref.eval_split is not None:
                source = card.source.model_copy(update={"split": ref.eval_split})
                split_card = card.model_copy(update={"source": source})
                checked = hygiene if decon is not None and decon.against is None else None
                rows, stats = card_rows(split_card, checked, is_eval=True)
                stats.name = f"{card.name} (split {ref.eval_split})"
                stats.eval = len(rows)
                stats.note_lengths(rows)
                eval_rows.extend(_chunked(rows, recipe, split_card, stats))
        parts = []  # (ref, card, rows; None for a streaming card, read while training: data.build_stream)
        near_seen: set[int] = set()  # MinHash band keys of the text documents kept so far, across cards
        for ref, card in recipe.card_pairs():
            if card.streaming:
                parts.append((ref, card, None))
                continue
            checks = _text_checks(recipe, card, hygiene, near_seen)
            rows, stats = card_rows(card, hygiene, text_checks=checks)
            train, held_out = split_eval(rows, ref.eval_fraction, rng)
            if ref.max_samples is not None:
                train = train[: ref.max_samples]
            # documents are held out whole, then split: no document has chunks on both sides
            train, held_out = _chunked(train, recipe, card, stats), _chunked(held_out, recipe, card, stats)
            stats.train, stats.eval = len(train), len(held_out)
            stats.note_lengths(rows)
            train_parts.append(train)
            parts.append((ref, card, train))
            eval_rows.extend(held_out)
            weights.append(ref.weight)
        if any(rows is None for _, _, rows in parts):
            from qwen35_tune.data.build_stream import build_stream

            stream = build_stream(recipe, tokenizer, run_dir, parts, hygiene.eval_texts)
            stats = {**summary(None), "streaming": [card.name for _, card, rows in parts if rows is None]}
            if run_dir:
                _write_stats(run_dir, stats)
            return stream, (to_dataset_of(eval_rows, to_columns) if eval_rows else None), stats
        mixed = mix_by_weight(train_parts, weights, rng)
        if not mixed:
            where = f"; counts in {run_dir / 'data_stats.json'}, rejected rows in {quarantine.path}" if run_dir else ""
            raise UserError(f"no training rows left after quarantine, hygiene and eval holdout{where}:\n"
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
    return to_dataset_of(mixed, to_columns), (to_dataset_of(eval_rows, to_columns) if eval_rows else None), stats


def to_dataset_of(rows: list[RenderedRow], to_columns=None):
    """Rows as a ``datasets.Dataset`` (text-only rows: input_ids and labels; ``to_columns`` for another stage's)."""
    from datasets import Dataset

    columns, features = (to_columns or dataset_columns)(rows)
    return Dataset.from_dict(columns, features=features)


def _chunked(rows: list[RenderedRow], recipe, card, stats: CardStats) -> list[RenderedRow]:
    """A format: text card's documents split into train.max_length chunks (every token once); other rows unchanged."""
    if card.format != "text":
        return rows
    out = []
    for row in rows:
        chunks = chunk_row(row, recipe.train.max_length)
        stats.chunked += len(chunks) > 1
        out.extend(chunks)
    return out


def _text_checks(recipe, card, hygiene: Hygiene, near_seen: set[int]) -> TextRowChecks | None:
    """A format: text card's document hygiene (filters, near-duplicates, eval overlap), or None when none applies."""
    if card.format != "text":
        return None
    from qwen35_tune.data.build_stream import eval_overlap
    from qwen35_tune.data.near_dedupe import NearDuplicateKeys

    near = recipe.data.near_dedupe
    keys = NearDuplicateKeys.for_threshold(near.threshold, near.num_perm, near.shingle_words) if near else None
    checks = DocumentChecks.for_card(card, eval_overlap(recipe, hygiene.eval_texts))
    if keys is None and card.filters is None and checks.overlap is None:
        return None
    return TextRowChecks(checks, keys, near_seen)


def dataset_columns(rows: list[RenderedRow]) -> tuple[dict[str, list], object | None]:
    """(columns, features) for ``datasets.Dataset.from_dict``; text-only rows give just ids and labels, as before.

    With any multimodal row every row gets ``mm_token_type_ids``, the grids and the media references (empty for
    text rows); pixels are not stored but made by ``render_media.PixelLoader`` at collation.
    """
    columns = {"input_ids": [r.input_ids for r in rows], "labels": [r.labels for r in rows]}
    if not any(isinstance(r, MultimodalRow) for r in rows):
        return columns, None
    from datasets import Features, Sequence, Value

    columns["mm_token_type_ids"] = [r.mm_token_type_ids if isinstance(r, MultimodalRow) else [] for r in rows]
    for key in GRID_KEYS:
        columns[key] = [r.media[key].tolist() if isinstance(r, MultimodalRow) and key in r.media else [] for r in rows]
    for key in REF_KEYS:
        columns[key] = [r.refs.get(key, []) if isinstance(r, MultimodalRow) else [] for r in rows]
    ints, strings = Sequence(Value("int64")), Sequence(Value("string"))
    features = Features({"input_ids": ints, "labels": ints, "mm_token_type_ids": ints,
                         "image_grid_thw": Sequence(ints), "video_grid_thw": Sequence(ints),
                         "image_refs": strings, "video_refs": strings})  # fmt: skip
    return columns, features


def _write_stats(run_dir: Path, stats: dict) -> None:
    (run_dir / "data_stats.json").write_text(strict_json.dumps(stats, indent=2))
