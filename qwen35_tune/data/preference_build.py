"""Preference cards → tokenised (prompt, chosen, rejected) rows, through the same renderer, cache and checks as SFT.

Each pair is rendered as two conversations, prompt + chosen and prompt + rejected, through the SFT data path
(``data.build``'s cached text and media maps over ``render_with_mask``) with ``train_on: final_turn_only``: the
trained span of each is exactly the tokens SFT would train for that final assistant turn (its reasoning under the
thinking policy, its ``<|im_end|>``; an empty think block masked). The ids before it are the prompt. Both renders
share the prompt; where they part before the answer starts (one answer reasons and the other does not, so the
template writes an empty think block for the second) the tokens from there on belong to each answer. Prompt tokens are
never scored: TRL's DPOTrainer scores ``chosen_ids`` / ``rejected_ids`` only (its ``completion_mask``), and these
columns go to it as they are (its own tokenisation is skipped, ``train.trainer.QwenDPOTrainer``).

A pair longer than ``train.max_length`` (prompt + the longer answer) follows ``data.too_long``: dropped, or its
answers cut at the end (a prompt that fills the length alone leaves nothing to compare: quarantined).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qwen35_tune.data.build import CardStats, render_columns
from qwen35_tune.data.formats import BadRow
from qwen35_tune.data.preference import normalise_preference, pair_key_row, pair_rows
from qwen35_tune.data.quarantine import Quarantine, reason_key
from qwen35_tune.data.render import RenderedRow, trained_runs
from qwen35_tune.data.render_media import GRID_KEYS, REF_KEYS, MultimodalRow
from qwen35_tune.data.row_progress import counted
from qwen35_tune.data.sources import iter_card_rows


@dataclass(frozen=True)
class PreferenceRow:
    """One pair as the trainer takes it: the shared prompt ids and each answer's ids (what is scored), plus, for rows
    with images or videos, the prompt's ``mm_token_type_ids`` and the media grids and references."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    prompt_types: list[int] = field(default_factory=list)
    grids: dict = field(default_factory=dict)
    refs: dict = field(default_factory=dict)

    @property
    def input_ids(self) -> list[int]:
        """The longer of the two sequences (lengths in data_stats.json)."""
        longer = max(self.chosen_ids, self.rejected_ids, key=len)
        return self.prompt_ids + longer

    @property
    def n_trained(self) -> int:
        return len(self.chosen_ids) + len(self.rejected_ids)

    @property
    def has_media(self) -> bool:
        return bool(self.prompt_types)


def _answer_span(row: RenderedRow, side: str) -> tuple[int, int]:
    runs = trained_runs(row.labels)
    if len(runs) != 1:
        raise BadRow(f"the {side} answer did not render as one span of tokens ({len(runs)} runs): mask derivation "
                     "failed for this template")
    return runs[0]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def split_pair(chosen: RenderedRow, rejected: RenderedRow) -> PreferenceRow:
    """The rendered prompt + chosen and prompt + rejected conversations → one ``PreferenceRow`` (see module doc)."""
    (c_start, c_end), (r_start, r_end) = _answer_span(chosen, "chosen"), _answer_span(rejected, "rejected")
    shared = _common_prefix(chosen.input_ids[:c_start], rejected.input_ids[:r_start])
    if shared == 0:
        raise BadRow("chosen and rejected rendered with no prompt in common")
    row = PreferenceRow(chosen.input_ids[:shared], chosen.input_ids[shared:c_end], rejected.input_ids[shared:r_end])
    if row.chosen_ids == row.rejected_ids:
        raise BadRow("chosen and rejected render to the same tokens (under this recipe's thinking policy): the pair "
                     "teaches nothing")
    if isinstance(chosen, MultimodalRow) or isinstance(rejected, MultimodalRow):
        types = [chosen.mm_token_type_ids, rejected.mm_token_type_ids]
        if any(types[0][shared:]) or any(types[1][shared:]) or types[0][:shared] != types[1][:shared]:
            raise BadRow("images or videos inside an answer: only the prompt may hold media")
        grids = {k: chosen.media[k].tolist() for k in GRID_KEYS if k in chosen.media}
        row = PreferenceRow(row.prompt_ids, row.chosen_ids, row.rejected_ids, types[0][:shared], grids, chosen.refs)
    return row


def _fit_length(row: PreferenceRow, max_length: int, too_long: str) -> PreferenceRow | None:
    """``row`` within ``max_length`` tokens per sequence: as it is, None (``too_long: drop``), or answers cut."""
    if len(row.input_ids) <= max_length:
        return row
    if too_long == "drop":
        return None
    room = max_length - len(row.prompt_ids)  # only answers are cut: a prompt's vision tokens stay whole
    if room <= 0:
        raise BadRow(f"the prompt alone is {len(row.prompt_ids)} tokens, train.max_length={max_length} leaves no "
                     "answer token to compare")
    return PreferenceRow(row.prompt_ids, row.chosen_ids[:room], row.rejected_ids[:room], row.prompt_types, row.grids,
                         row.refs)


def render_preference_card(
    card, recipe, tokenizer, quarantine: Quarantine, hygiene=None, is_eval: bool = False, processor=None,
) -> tuple[list[PreferenceRow], CardStats]:
    """Every row of one preference card as a ``PreferenceRow``; bad rows go to quarantine with their reason (the
    caller fails the run past the card's ``max_bad_fraction``), like ``data.build.render_card`` for SFT rows."""
    stats = CardStats(card.name)
    chat, max_length = recipe.chat, recipe.train.max_length
    template = Path(chat.template).read_text(encoding="utf-8") if chat.template else None
    kept: list[tuple[str, int, dict]] = []
    sides: list[dict] = []  # prompt + chosen, prompt + rejected, for each kept pair in turn
    rejected: list[tuple[str, int, str, object]] = []
    from qwen35_tune.data.hygiene import check_media

    for file, number, raw in counted(iter_card_rows(card), card.name):
        stats.rows += 1
        try:
            if isinstance(raw, BadRow):
                raise raw
            pair = check_media(normalise_preference(raw, card.columns), card.media_base, card.media_roots)
        except BadRow as exc:
            stats.bad[reason_key(str(exc))] += 1
            rejected.append((file, number, str(exc), None if isinstance(raw, BadRow) else raw))
            continue
        if hygiene is not None and is_eval:
            hygiene.add_eval_row(pair_key_row(pair))
        elif hygiene is not None and (dropped := hygiene.drop_reason(pair_key_row(pair))):
            setattr(stats, dropped, getattr(stats, dropped) + 1)
            continue
        kept.append((file, number, raw))
        sides.extend(pair_rows(pair))
    options = {"train_on": "final_turn_only", "mask_empty_think": chat.mask_empty_think,
               "enable_thinking": chat.enable_thinking}
    columns = render_columns(sides, processor, tokenizer, recipe.model.vision, card.name, template, options)
    rendered = [columns["multimodal"][i] or RenderedRow("", columns["input_ids"][i], columns["labels"][i], ())
                for i in range(len(sides))]
    rows: list[PreferenceRow] = []
    for index, (file, number, raw) in enumerate(kept):
        try:
            problem = columns["problem"][2 * index] or columns["problem"][2 * index + 1]
            if problem:
                raise BadRow(problem)
            row = split_pair(rendered[2 * index], rendered[2 * index + 1])
            fitted = _fit_length(row, max_length, recipe.data.too_long)
            if fitted is None:
                stats.too_long_dropped += 1
                continue
            if fitted is not row:
                stats.truncated += 1
        except BadRow as exc:
            stats.bad[reason_key(str(exc))] += 1
            rejected.append((file, number, str(exc), raw))
            continue
        rows.append(fitted)
    order = {file: i for i, file in enumerate(dict.fromkeys(r[0] for r in rejected))}
    for file, number, reason, raw in sorted(rejected, key=lambda r: (order[r[0]], r[1])):  # in file order
        quarantine.add(card.name, file, number, reason, raw)
    stats.kept = len(rows)
    return rows, stats


def preference_columns(rows: list[PreferenceRow]) -> tuple[dict[str, list], object | None]:
    """(columns, features) for ``datasets.Dataset.from_dict``: ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids``
    (TRL's pre-tokenised preference columns), and for media rows the prompt's types, grids and media references."""
    columns = {"prompt_ids": [r.prompt_ids for r in rows], "chosen_ids": [r.chosen_ids for r in rows],
               "rejected_ids": [r.rejected_ids for r in rows]}  # fmt: skip
    if not any(r.has_media for r in rows):
        return columns, None
    from datasets import Features, Sequence, Value

    columns["prompt_mm_token_type_ids"] = [r.prompt_types for r in rows]
    for key in GRID_KEYS:
        columns[key] = [r.grids.get(key, []) for r in rows]
    for key in REF_KEYS:
        columns[key] = [r.refs.get(key, []) for r in rows]
    ints, strings = Sequence(Value("int64")), Sequence(Value("string"))
    features = Features({"prompt_ids": ints, "chosen_ids": ints, "rejected_ids": ints,
                         "prompt_mm_token_type_ids": ints, "image_grid_thw": Sequence(ints),
                         "video_grid_thw": Sequence(ints), "image_refs": strings, "video_refs": strings})  # fmt: skip
    return columns, features
