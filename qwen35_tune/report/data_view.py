"""The data section: per-card rows, weights and where rows went, quarantine reasons with example rows (file and
line), the token-length histogram, the trained-token share, and a few rows rendered with their trained tokens."""

from __future__ import annotations

import logging

from qwen35_tune.report.quarantine_sample import QuarantineSample
from qwen35_tune.report.svg import histogram
from qwen35_tune.rundir import RunDir

log = logging.getLogger(__name__)


def _weights(run: RunDir, recipe) -> dict[str, float]:
    """Card name -> mixture weight, from run_config.json, else from the recipe's card references."""
    weights = {c.get("name"): c.get("weight") for c in run.run_config().get("data_cards") or [] if c.get("name")}
    if not weights and recipe is not None:
        try:
            weights = {card.name: ref.weight for ref, card in recipe.card_pairs()}
        except Exception:  # noqa: BLE001 (a card no longer on this machine: the column stays empty)
            weights = {}
    return weights


def card_rows(stats: dict, weights: dict) -> list[dict]:
    """One line per card of data_stats.json, plus a total line."""
    summed = ("rows", "kept", "bad", "duplicate", "contaminated", "truncated", "dropped", "train", "eval", "tokens",
              "trained_tokens")
    rows, total = [], dict.fromkeys(summed, 0)
    for card in stats.get("cards") or []:
        bad = sum((card.get("bad") or {}).values())
        line = {"name": card.get("name", "?"), "weight": weights.get(card.get("name")), "rows": card.get("rows", 0),
                "kept": card.get("kept", 0), "bad": bad, "duplicate": card.get("duplicate", 0),
                "contaminated": card.get("contaminated", 0), "truncated": card.get("truncated", 0),
                "dropped": card.get("too_long_dropped", 0), "train": card.get("train", 0),
                "eval": card.get("eval", 0), "tokens": card.get("tokens", 0),
                "trained_tokens": card.get("trained_tokens", 0), "lengths": card.get("length_percentiles") or {},
                "total": False}
        line["share"] = line["trained_tokens"] / line["tokens"] if line["tokens"] else None
        rows.append(line)
        for key in total:
            total[key] += line[key] or 0
    if rows:
        total["share"] = total["trained_tokens"] / total["tokens"] if total["tokens"] else None
        rows.append({"name": "total", "total": True, "weight": None, "lengths": {}, **total})
    return rows


def length_chart(stats: dict, max_length) -> object | None:
    """Stacked histogram of kept rows' token lengths per card, on the widest bin any card used."""
    hists = [(c.get("name", "?"), c.get("length_histogram") or {}) for c in stats.get("cards") or []]
    hists = [(name, h) for name, h in hists if h.get("counts")]
    if not hists:
        return None
    width = max(h["bin_width"] for _, h in hists)
    groups = []
    for name, h in hists:
        factor = width // h["bin_width"]  # power-of-two widths: a wider bin is a whole number of narrower ones
        counts = [0] * -(-len(h["counts"]) // factor)
        for i, n in enumerate(h["counts"]):
            counts[i // factor] += n
        groups.append((name, counts))
    marker = (max_length, f"train.max_length {max_length}") if isinstance(max_length, int) else None
    return histogram(groups, width, title="token length of kept rows (per card)", chart_id="chart-lengths",
                     marker=marker)


def rendered_rows(run: RunDir, recipe) -> tuple[list, str | None, str | None]:
    """(rows, tokenizer source, problem): the rendered rows, or why there are none."""
    if recipe is None:
        return [], None, "the recipe does not load here (see the recipe section), so its cards cannot be read"
    try:
        from qwen35_tune.report.rows import load_run_tokenizer, pick_rows

        tokenizer, template, source = load_run_tokenizer(run, recipe)
        return pick_rows(recipe, tokenizer, template), source, None
    except Exception as exc:  # noqa: BLE001 (a card or tokenizer gone since the run: the rest of the page stands)
        log.debug("rows not rendered", exc_info=True)
        return [], None, f"rows not rendered: {type(exc).__name__}: {exc}"


def data_view(run: RunDir, recipe, leaves: dict, stats: dict, quarantine: QuarantineSample, with_rows: bool) -> dict:
    rows, source, problem = rendered_rows(run, recipe) if with_rows else ([], None, "rows not rendered")
    return {"error": stats.get("error"), "cards": card_rows(stats, _weights(run, recipe)),
            "decontamination": stats.get("decontamination"),
            "lengths": length_chart(stats, leaves.get("train.max_length")),
            "quarantine": quarantine, "reasons": quarantine.reasons(),
            "rows": rows, "rows_source": source, "rows_problem": problem, "has_stats": bool(stats)}
