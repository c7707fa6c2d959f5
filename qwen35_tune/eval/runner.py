"""The eval runner: pick a suite's rows, generate (batched, per thinking mode, with a token budget), score, and
write ``eval/<suite>.json`` (metrics) and ``eval/<suite>.samples.jsonl`` (prompt, output, extracted, gold, verdict).

Used by ``qwen35-tune eval`` on a finished run or model folder, and by the eval-during-training callback on the
model being trained (``run_suite`` takes a live model).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from qwen35_tune import strict_json
from qwen35_tune.errors import UserError
from qwen35_tune.eval.rows import EvalRow, card_rows, contaminated, held_out_rows, public_rows
from qwen35_tune.eval.suites import SUITE_DOMAINS, Suite, parse_suite, score_output, suite_file_stem, summarize
from qwen35_tune.rundir import RunDir

log = logging.getLogger(__name__)


def select_rows(suite: Suite, *, recipe=None, tokenizer=None, card: Path | None = None,
                limit: int | None = None) -> tuple[list[EvalRow], str]:
    """(rows, where they came from): a public set, an explicit card, or the recipe's held-out rows of the suite's
    domain; at most ``limit`` (the first ones, so runs compare on the same rows)."""
    if suite.public:
        rows, origin = public_rows(suite.public), suite.public
    elif card is not None:
        from qwen35_tune.cards.load import load_card

        data_card = load_card(Path(card))
        rows, origin = card_rows(data_card), f"card {data_card.name}"
    elif recipe is not None:
        rows, origin = _held_out_for(suite, recipe, tokenizer)
    else:
        raise UserError(f"suite '{suite.name}' needs eval rows: pass --card CARD.yaml (or evaluate a run directory, "
                        "whose recipe holds rows out with eval_fraction or data.eval_cards)")
    return (rows[:limit] if limit else rows), origin


def _suite_domain(suite: Suite, domain: str | None) -> bool:
    """Whether a card of ``domain`` feeds ``suite`` ('qa' takes every domain the other card suites do not)."""
    if suite.kind in SUITE_DOMAINS:
        return domain in SUITE_DOMAINS[suite.kind]
    return domain not in {d for ds in SUITE_DOMAINS.values() for d in ds}


def require_eval_rows(suite: Suite, recipe, card: Path | None) -> None:
    """Before any model is loaded: a card suite needs ``--card``, or a run whose recipe holds out rows of a card of
    the suite's domain (an eval card, a training card's eval_fraction or eval_split). Names what to set otherwise."""
    if suite.public or suite.kind == "lm-eval" or card is not None:
        return
    if recipe is None:
        raise UserError(f"suite '{suite.name}' needs eval rows: pass --card CARD.yaml (or evaluate a run directory, "
                        "whose recipe holds rows out with eval_fraction or data.eval_cards)")
    wanted = "/".join(SUITE_DOMAINS.get(suite.kind, ("any domain but math/code/translation",)))
    evals = [c.name for _, c in recipe.card_pairs("eval") if _suite_domain(suite, c.domain)]
    trains = [(i, ref, c) for i, (ref, c) in enumerate(recipe.card_pairs()) if _suite_domain(suite, c.domain)]
    if evals or any(ref.eval_fraction > 0 or ref.eval_split for _, ref, _ in trains):
        return
    if trains:
        names = ", ".join(f"{c.name} (data.cards.{i})" for i, _, c in trains)
        raise UserError(f"suite '{suite.name}': this run held out no rows of its {wanted} cards ({names}): every row "
                        f"was trained on. Pass --card CARD.yaml with rows the model has not seen, or train again with "
                        f"data.cards.{trains[0][0]}.eval_fraction=0.05 (or a data.eval_cards entry)")
    have = ", ".join(f"{c.name} ({c.domain or 'no domain'})" for _, c in [*recipe.card_pairs(),
                                                                         *recipe.card_pairs("eval")]) or "none"
    raise UserError(f"suite '{suite.name}': this run has no card of domain {wanted} (its cards: {have}); pass "
                    f"--card CARD.yaml, or pick the suite of the run's domain")


def _held_out_for(suite: Suite, recipe, tokenizer) -> tuple[list[EvalRow], str]:
    domains = {card.name: card.domain for _, card in [*recipe.card_pairs(), *recipe.card_pairs("eval")]}
    held = held_out_rows(recipe, tokenizer)
    wanted = [name for name in held if _suite_domain(suite, domains.get(name.split(" (split ")[0]))]
    if not wanted:
        have = ", ".join(f"{n} ({domains.get(n.split(' (split ')[0]) or 'no domain'})" for n in held) or "none"
        raise UserError(f"suite '{suite.name}': the recipe holds out no rows of a "
                        f"{'/'.join(SUITE_DOMAINS.get(suite.kind, ('non-math/code/translation',)))} card (held-out "
                        f"cards: {have}); set eval_fraction on such a card or pass --card")
    return [row for name in wanted for row in held[name]], "held-out rows of " + ", ".join(wanted)


def run_suite(model, tokenizer, suite: Suite, rows: list[EvalRow], *, modes=("thinking",), max_new_tokens: int = 512,
              batch_size: int = 8, timeout_s: float = 10.0, ranks=None) -> tuple[dict, list[dict]]:
    """({mode: metrics}, samples) for ``rows``; every mode generates for every row.

    ``ranks`` (an ``eval.ranks.RankGroup``): each rank generates and scores its share of the rows and every rank
    gets the joined results (all ranks must call this together; the model must be whole on each rank).
    """
    from qwen35_tune.eval.generate import generate_answers

    results, samples = {}, []
    mine = ranks.share(rows) if ranks is not None else rows
    for mode in modes:
        started = time.time()
        prompts, generations = generate_answers(model, tokenizer, [r.prompt for r in mine], mode, max_new_tokens,
                                                batch_size)
        scored = [score_output(suite.kind, g.answer, g.text, row, timeout_s)
                  for g, row in zip(generations, mine, strict=True)]
        if ranks is not None:  # one gather per mode, the rows back in their order
            joined = ranks.join(list(zip(prompts, generations, scored, strict=True)))
            prompts, generations, scored = [j[0] for j in joined], [j[1] for j in joined], [j[2] for j in joined]
        results[mode] = {**summarize(suite.kind, scored, generations), "mode": mode, "budget": max_new_tokens,
                         "seconds": round(time.time() - started, 2)}
        samples += [{"mode": mode, "origin": row.origin, "prompt": prompt, "output": g.text, "extracted": s.extracted,
                     "gold": s.gold if s.gold is not None else row.reference, "verdict": s.verdict,
                     "correct": s.correct, **({"detail": s.detail} if s.detail else {})}
                    for row, prompt, g, s in zip(rows, prompts, generations, scored, strict=True)]
        log.info("eval %s (%s): %s", suite.name, mode, _headline(suite, results[mode]))
    return results, samples


def _headline(suite: Suite, metrics: dict) -> str:
    key = suite.primary_metric
    value = metrics.get(key)
    text = f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
    return text + (f", extractable {metrics['extractable']:.2f}" if "extractable" in metrics else "") + \
        f", n={metrics.get('n')}"


def write_suite(out_dir: Path, suite: Suite, report: dict, samples: list[dict]) -> Path:
    """Write ``<suite>.json`` and ``<suite>.samples.jsonl`` into ``out_dir``; returns the json path.

    No secret of this process reaches the files: known secret values are cut from every sample string, and
    token-shaped strings also from verdict details (program output)."""
    from qwen35_tune.eval.redact import redact, redact_known, secret_values

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = suite_file_stem(suite.name)
    path = out_dir / f"{stem}.json"
    path.write_text(strict_json.dumps(report, indent=2, ensure_ascii=False))
    values = secret_values()
    with (out_dir / f"{stem}.samples.jsonl").open("w", encoding="utf-8") as fh:
        for sample in samples:
            clean = {k: (redact(v, values) if k == "detail" else redact_known(v, values)) if isinstance(v, str) else v
                     for k, v in sample.items()}
            fh.write(strict_json.dumps(clean, ensure_ascii=False) + "\n")
    return path


def check_overlap(suite: Suite, rows: list[EvalRow], recipe) -> dict | None:
    """Eval rows that overlap the recipe's training rows ({'exact': [...], 'ngram': [...]}); None without a recipe."""
    overlap = contaminated(rows, recipe) if recipe is not None else None
    if overlap and overlap["exact"]:
        log.warning("eval %s: %d of %d rows repeat a training row exactly (listed in the json)", suite.name,
                    len(overlap["exact"]), len(rows))
    return overlap


def build_report(suite: Suite, results: dict, *, rows: list[EvalRow], origin: str, overlap: dict | None = None,
                 model: str = "", step: int | None = None) -> dict:
    """The suite's json: per-mode metrics plus where the rows came from and which overlap the training data."""
    contamination = None if overlap is None else {
        "checked_against": "training cards", "exact_duplicates": len(overlap["exact"]),
        "ngram_overlapping": len(overlap["ngram"]), "exact_rows": overlap["exact"][:50],
        "ngram_rows": overlap["ngram"][:50]}
    return {"suite": suite.name, "kind": suite.kind, "primary_metric": suite.primary_metric, "model": model,
            "step": step, "rows_from": origin, "n": len(rows), "modes": results, "contamination": contamination}


def evaluate(path: Path, suite_name: str, *, card: Path | None = None, limit: int | None = None,
             modes=("thinking",), max_new_tokens: int = 512, out: Path | None = None, batch_size: int = 8) -> Path:
    """``qwen35-tune eval``: load ``path`` (run, model or adapter dir), run one suite, write it; returns the json."""
    from qwen35_tune.eval.generate import describe_source

    suite = parse_suite(suite_name)
    source = describe_source(Path(path))
    recipe = _run_recipe(source["run_dir"])
    out_dir = out or (RunDir(source["run_dir"]).eval if source["run_dir"] else Path(source["weights"]) / "eval")
    if suite.kind == "lm-eval":
        return _evaluate_lm_eval(suite, source, card, limit, out_dir, modes, max_new_tokens, batch_size)
    from qwen35_tune.eval.generate import load_eval_model, load_eval_tokenizer

    require_eval_rows(suite, recipe, card)  # instant: no model load to learn that there is nothing to score
    tokenizer = load_eval_tokenizer(source)
    rows, origin = select_rows(suite, recipe=recipe, tokenizer=tokenizer, card=card, limit=limit)
    model = load_eval_model(source)  # the slow part, once the rows are known
    results, samples = run_suite(model, tokenizer, suite, rows, modes=modes, max_new_tokens=max_new_tokens,
                                 batch_size=batch_size)
    report = build_report(suite, results, rows=rows, origin=origin, overlap=check_overlap(suite, rows, recipe),
                          model=str(path))
    return write_suite(out_dir, suite, report, samples)


def _run_recipe(run_dir: Path | None):
    """The run's resolved recipe (for held-out rows and decontamination), or None outside a run."""
    return RunDir(run_dir).recipe if run_dir is not None else None


def _evaluate_lm_eval(suite: Suite, source: dict, card: Path | None, limit: int | None, out_dir: Path, modes,
                      max_new_tokens: int, batch_size: int) -> Path:
    """lm-evaluation-harness on a full model folder (its own generation and scoring), with an optional local jsonl;
    the harness's own files go to ``out_dir/<suite>_<mode>/``."""
    from qwen35_tune.eval.lm_eval_suite import run_lm_eval

    if source["base"] is not None:
        raise UserError("lm-eval needs a full model folder; merge the run first (qwen35-tune merge RUN_DIR) and "
                        "evaluate RUN_DIR again (its merged/ folder is used)")
    jsonl = None
    if card is not None:
        from qwen35_tune.cards.load import load_card

        files = load_card(Path(card)).source_files()
        jsonl = str(files[0]) if files else None
    results = {}
    for mode in modes:
        metrics = run_lm_eval(str(source["weights"]), suite.public, jsonl=jsonl, limit=limit,
                              out_dir=str(out_dir / f"{suite_file_stem(suite.name)}_{mode}"),
                              thinking=mode == "thinking", max_new_tokens=max_new_tokens, batch_size=batch_size)
        results[mode] = {**metrics, "mode": mode, "budget": max_new_tokens}
    first = next(iter(results.values()))
    primary = next((k for k, v in first.items() if isinstance(v, float) and not k.endswith("_stderr")), "score")
    report = {"suite": suite.name, "kind": "lm-eval", "primary_metric": primary, "model": str(source["weights"]),
              "task": suite.public, "n": limit, "modes": results, "rows_from": jsonl or f"lm-eval task {suite.public}"}
    return write_suite(out_dir, suite, report, [])
