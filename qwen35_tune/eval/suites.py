"""Eval suites: what each suite's rows are and how one output is scored, then summed up into the suite's metrics.

The checking itself lives in eval.math_answers (extraction + math-verify), eval.code_sandbox (sandboxed tests) and
eval.text_metrics (sacrebleu chrF/BLEU, exact match, multiple choice); this module only routes outputs to them.
Importing it stays light (no torch), so recipe validation can check suite names.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from qwen35_tune.errors import UserError

CARD_SUITES = ("math", "code", "translation", "qa")  # rows from data cards (held-out split or --card)
PUBLIC_SUITES = {"human-eval": "code", "champ": "math"}  # public set -> how it is scored
LM_EVAL_PREFIX = "lm-eval:"
PRIMARY_METRIC = {"math": "accuracy", "code": "pass@1", "translation": "chrf", "qa": "accuracy"}
# Card domains each card suite draws held-out rows from ('qa' takes the cards of any other domain).
SUITE_DOMAINS = {"math": ("math",), "code": ("code",), "translation": ("translation",)}


@dataclass(frozen=True)
class Suite:
    """A parsed suite name: ``kind`` is how outputs are scored, ``public`` the public set or lm-eval task, if any."""

    name: str
    kind: str  # math | code | translation | qa | lm-eval
    public: str | None = None

    @property
    def primary_metric(self) -> str:
        return PRIMARY_METRIC.get(self.kind, "score")


def parse_suite(name: str) -> Suite:
    """'math', 'code', 'translation', 'qa', 'human-eval', 'champ' or 'lm-eval:TASK'; anything else is a UserError."""
    if name in CARD_SUITES:
        return Suite(name, name)
    if name in PUBLIC_SUITES:
        return Suite(name, PUBLIC_SUITES[name], name)
    if name.startswith(LM_EVAL_PREFIX) and len(name) > len(LM_EVAL_PREFIX):
        return Suite(name, "lm-eval", name[len(LM_EVAL_PREFIX) :])
    known = ", ".join([*CARD_SUITES, *PUBLIC_SUITES, LM_EVAL_PREFIX + "TASK"])
    raise UserError(f"unknown eval suite '{name}' (choose one of {known})")


def suite_file_stem(name: str) -> str:
    """File-name-safe form of a suite name ('lm-eval:gsm8k' -> 'lm-eval_gsm8k')."""
    return name.replace(":", "_").replace("/", "_")


@dataclass(frozen=True)
class Scored:
    """One output's verdict: what was extracted from it, what it was checked against, and whether it passed."""

    extracted: str | None
    gold: str | None
    verdict: str  # correct | wrong | no-answer | passed | failed | timeout | crashed | refused | scored
    correct: bool
    detail: str = ""


def score_output(kind: str, answer: str, text: str, row, timeout_s: float = 10.0) -> Scored:
    """Score one generation of ``row`` by its final ``answer`` only (the part after </think>; empty when the output
    stopped inside the think block). ``text``, the whole output, is never searched: a number or code block taken
    from unfinished reasoning is not an answer."""
    if kind == "math":
        return _score_math(answer, text, row)
    if kind == "code":
        return _score_code(answer, text, row, timeout_s)
    if kind == "qa":
        from qwen35_tune.eval.text_metrics import choice_correct, exact_match

        gold = row.gold if row.gold is not None else row.reference
        if not answer.strip():  # no final answer (e.g. cut off inside <think>): nothing to extract
            return Scored(None, gold, "no-answer", False)
        ok = choice_correct(answer, row.choices, gold) if row.choices else exact_match(answer, gold)
        return Scored(answer, gold, "correct" if ok else "wrong", bool(ok))
    if kind == "translation":
        return Scored(answer, row.reference, "scored", False)  # corpus-level chrF/BLEU in summarize()
    raise UserError(f"no scorer for suite kind '{kind}'")


def _score_math(answer: str, text: str, row) -> Scored:
    from qwen35_tune.eval.math_answers import answers_equivalent, extract_answer

    gold = row.gold if row.gold is not None else extract_answer(row.reference)
    if gold is None:
        raise UserError(f"math row {row.origin}: no gold answer (give a 'check' column or an extractable answer)")
    predicted = extract_answer(answer) if answer.strip() else None
    if predicted is None:
        return Scored(None, gold, "no-answer", False)
    ok = answers_equivalent(predicted, gold)
    return Scored(predicted, gold, "correct" if ok else "wrong", bool(ok))


def _score_code(answer: str, text: str, row, timeout_s: float) -> Scored:
    from qwen35_tune.eval.code_sandbox import extract_code, run_with_tests

    if not row.tests:
        raise UserError(f"code row {row.origin}: no tests (give a 'tests' column)")
    code = extract_code(answer)
    if code is None:
        return Scored(None, None, "no-answer", False)
    result = run_with_tests(code, row.tests, timeout_s=timeout_s)
    return Scored(code, None, result.verdict, result.verdict == "passed", str(result.detail)[:500])


def summarize(kind: str, scored: list[Scored], generations: list) -> dict:
    """The suite's metrics over one mode's outputs: main score, share extractable, verdict counts, budget hits."""
    n = len(scored)
    out: dict = {"n": n, "verdicts": dict(Counter(s.verdict for s in scored)),
                 "truncated": sum(g.truncated for g in generations),
                 "unfinished_think": sum(getattr(g, "unfinished_think", False) for g in generations),
                 "mean_new_tokens": round(sum(g.new_tokens for g in generations) / max(n, 1), 1)}
    if kind == "translation":
        from qwen35_tune.eval.text_metrics import bleu, chrf

        hyps, refs = [s.extracted or "" for s in scored], [s.gold or "" for s in scored]
        out.update(chrf=chrf(hyps, refs) if n else 0.0, bleu=bleu(hyps, refs) if n else 0.0,
                   extractable=sum(bool(h.strip()) for h in hyps) / max(n, 1))
        return out
    key = PRIMARY_METRIC[kind]
    out[key] = sum(s.correct for s in scored) / max(n, 1)
    out["extractable"] = sum(s.extracted is not None for s in scored) / max(n, 1)
    return out
