"""GRPO's reward functions: the recipe's ``rewards:`` list as TRL reward callables, one per entry, logged by name.

- ``correct``: the final answer (what follows ``</think>``; nothing while the think block is unfinished) checked by
  the row's kind, with the eval checkers: math-verify (eval/math_answers.py), the code's pass fraction over its tests
  in the sandbox (eval/code_sandbox.py; each test line is its own sandboxed run, on a bounded thread pool, so time
  and memory limits hold however many completions a step scores), the multiple-choice label (eval/text_metrics.py),
  sentence chrF / 100 against the reference translation (sacrebleu). 0 to 1.
- ``format``: 1 for Qwen3.5's thinking format, one closed ``<think>...</think>`` (the prompt opens it in thinking
  mode) then a non-empty answer and the end-of-turn token; in non-thinking mode no think tags at all. Else 0.
- ``length``: 0 up to ``max_tokens``, then falling linearly to -1 at ``grpo.max_completion_length`` (DAPO's soft
  over-length penalty, against reasoning that runs on).
- ``custom: module:function`` (with ``trust_code: true``): your function, called as TRL calls reward functions
  (``prompts``, ``completions``, ``completion_ids``, plus the rows' ``check`` dicts and ``origin``), returning one
  float (or None) per completion.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.eval.generate import THINK_END, THINK_START, opens_think, split_reasoning
from qwen35_tune.recipe.grpo_section import grpo_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completion:
    """One sampled completion as the rewards read it."""

    text: str  # decoded, end-of-turn token cut off; think tags kept
    think_open: bool  # the prompt opened <think> (Qwen3.5's thinking-mode generation prompt)
    tokens: int  # completion tokens, the end-of-turn token included
    finished: bool  # ended with an end-of-turn token (not cut off at max_completion_length)

    @property
    def answer(self) -> str | None:
        """The final answer: what follows </think> (the whole text without a think block); None while unfinished."""
        return split_reasoning(self.text, self.think_open)[1]


def parse_completions(prompts: list[str], completions: list, completion_ids: list[list[int]],
                      eos_ids: set[int]) -> list[Completion]:
    """Completions of one batch as ``Completion``s (TRL hands text already decoded, special tokens skipped)."""
    out = []
    for prompt, text, ids in zip(prompts, completions, completion_ids, strict=True):
        text = text if isinstance(text, str) else (text[-1].get("content") or "")  # conversational: last message
        out.append(Completion(text, opens_think(prompt if isinstance(prompt, str) else ""), len(ids),
                              bool(ids) and ids[-1] in eos_ids))
    return out


# ---- the checks -------------------------------------------------------------------------------------------------

def format_score(completion: Completion) -> float:
    """1.0 when the completion has Qwen3.5's thinking format for its mode (see the module docstring), else 0.0."""
    text, answer = completion.text, completion.answer
    if not completion.finished or answer is None or not answer.strip():
        return 0.0
    opens, closes = text.count(THINK_START), text.count(THINK_END)
    if completion.think_open:  # the prompt wrote <think>: one </think>, no second block
        return float(opens == 0 and closes == 1)
    # the prompt closed an empty block (non-thinking) or has none: no tags, or one whole block written by the model
    return float((opens, closes) == (0, 0) or (opens == closes == 1 and text.lstrip().startswith(THINK_START)))


def length_score(completion: Completion, max_tokens: int, max_completion_length: int) -> float:
    """0 up to ``max_tokens``; then linearly down to -1 at ``max_completion_length`` (and beyond)."""
    over = completion.tokens - max_tokens
    if over <= 0:
        return 0.0
    return -min(1.0, over / max(1, max_completion_length - max_tokens))


def math_score(completion: Completion, check: dict) -> float:
    """1.0 when the final answer extracted from the completion equals the row's answer (math-verify)."""
    from qwen35_tune.eval.math_answers import answers_equivalent, extract_answer

    answer = completion.answer
    predicted = extract_answer(answer) if answer and answer.strip() else None
    return float(predicted is not None and answers_equivalent(predicted, check["answer"]))


def choice_score(completion: Completion, check: dict) -> float:
    """1.0 when the final answer names the labelled choice (its letter or its text)."""
    from qwen35_tune.eval.text_metrics import choice_index

    answer = completion.answer
    return float(bool(answer and answer.strip()) and choice_index(answer, check["choices"]) == check["label"])


def translation_score(completion: Completion, check: dict) -> float:
    """Sentence chrF of the final answer against the reference, scaled to 0..1 (sacrebleu)."""
    from sacrebleu.metrics import CHRF

    answer = (completion.answer or "").strip()
    return CHRF().sentence_score(answer, [check["reference"]]).score / 100.0 if answer else 0.0


class CodeTests:
    """Runs code rows' tests in the sandbox, a bounded number at once; each test line is a run of its own, so the
    reward is the fraction that passed (a test program given as one string is one run: 0 or 1)."""

    def __init__(self, timeout_s: float = 10.0, memory_mb: int = 1024, workers: int = 4):
        self.timeout_s, self.memory_mb, self.workers = timeout_s, memory_mb, workers

    def scores(self, items: list[tuple[Completion, dict]]) -> list[float]:
        """Pass fraction per (completion, check); a completion without a fenced code block scores 0."""
        from qwen35_tune.eval.code_sandbox import extract_code

        jobs: dict[tuple[str, str], None] = {}  # distinct (code, test) runs of the batch: a group often repeats
        plans = []
        for completion, check in items:
            code = extract_code(completion.answer) if completion.answer else None
            tests = check["tests"] if isinstance(check["tests"], list) else [check["tests"]]
            plans.append((code, tests))
            for test in tests if code is not None else ():
                jobs.setdefault((code, test))
        verdicts = dict(zip(jobs, self._run(list(jobs)), strict=True))
        return [0.0 if code is None else sum(verdicts[(code, t)] for t in tests) / len(tests) for code, tests in plans]

    def _run(self, jobs: list[tuple[str, str]]) -> list[bool]:
        from qwen35_tune.eval.code_sandbox import run_with_tests

        def one(job: tuple[str, str]) -> bool:
            result = run_with_tests(job[0], job[1], timeout_s=self.timeout_s, memory_mb=self.memory_mb)
            return result.verdict == "passed"

        if not jobs:
            return []
        with ThreadPoolExecutor(max_workers=min(self.workers, len(jobs)), thread_name_prefix="q35-reward") as pool:
            return list(pool.map(one, jobs))


def correct_scores(completions: list[Completion], checks: list[dict], code: CodeTests) -> list[float]:
    """The ``correct`` reward of each completion, by its row's check kind (code rows scored together, in parallel)."""
    scores: list[float | None] = [None] * len(completions)
    code_items = [i for i, check in enumerate(checks) if check["kind"] == "code"]
    for i, value in zip(code_items, code.scores([(completions[i], checks[i]) for i in code_items]), strict=True):
        scores[i] = value
    single = {"math": math_score, "choice": choice_score, "translation": translation_score}
    for i, (completion, check) in enumerate(zip(completions, checks, strict=True)):
        if scores[i] is None:
            scores[i] = single[check["kind"]](completion, check)
    return scores


# ---- TRL reward callables ---------------------------------------------------------------------------------------

class RewardFunction:
    """A TRL reward callable named for its metrics (TRL logs ``rewards/<__name__>/mean`` and ``/std``).

    ``eos_ids``: the token ids generation stops at (set from the trainer), which tell a finished completion from one
    cut off; ``log_origin``: this one also hands TRL each row's origin for the completions sample."""

    eos_ids: set[int] = frozenset()
    log_origin = False

    def __init__(self, name: str, score):
        self.__name__, self.score = name, score

    def __call__(self, prompts, completions, completion_ids, check=None, **kwargs) -> list[float | None]:
        _log_origin(self, kwargs)
        parsed = parse_completions(prompts, completions, completion_ids, self.eos_ids)
        checks = [json.loads(c) if isinstance(c, str) else c for c in (check or [{}] * len(parsed))]
        return self.score(parsed, checks)


def _log_origin(function, kwargs: dict) -> None:
    """Pass the rows' origins to TRL's completion log (its ``log_extra`` reward argument), from one function only."""
    if function.log_origin and callable(kwargs.get("log_extra")) and kwargs.get("origin") is not None:
        kwargs["log_extra"]("origin", list(kwargs["origin"]))


def build_reward_functions(recipe, kinds: set[str] = frozenset()) -> tuple[list, list[float]]:
    """(reward callables, weights) for the recipe's ``rewards:``; ``kinds``: the check kinds in the data, whose
    checker libraries must be installed."""
    functions, weights = [], []
    max_length = grpo_settings(recipe).max_completion_length
    for spec in recipe.rewards:
        if spec.custom is not None:
            functions.append(load_custom_reward(spec.custom, recipe))
        elif spec.name == "correct":
            require_checkers(kinds)
            tests = CodeTests(spec.timeout_s, spec.memory_mb, spec.workers)
            functions.append(RewardFunction("correct", lambda cs, ks, t=tests: correct_scores(cs, ks, t)))
        elif spec.name == "format":
            functions.append(RewardFunction("format", lambda cs, ks: [format_score(c) for c in cs]))
        else:
            budget = spec.max_tokens
            functions.append(RewardFunction("length", lambda cs, ks, b=budget: [
                length_score(c, b, max_length) for c in cs]))
        weights.append(spec.weight)
    if functions:
        functions[0].log_origin = True
    return functions, weights


_CHECKERS = {"math": ("math_verify", "math answers are checked with math-verify"),
             "translation": ("sacrebleu", "translations are scored with sacrebleu's chrF")}


def require_checkers(kinds: set[str]) -> None:
    """UserError when the ``correct`` reward needs a checker library that is not installed."""
    for kind in sorted(kinds):
        module, why = _CHECKERS.get(kind, (None, ""))
        if module and importlib.util.find_spec(module) is None:
            raise UserError(f"rewards: correct: {why}, which is not installed: pip install 'qwen35-tune[eval]'")


class CustomReward:
    """A user's ``module:function`` reward, with its output checked (one finite float or None per completion)."""

    eos_ids: set[int] = frozenset()
    log_origin = False

    def __init__(self, label: str, function):
        self.__name__, self.function = label, function

    def __call__(self, prompts, completions, completion_ids, check=None, **kwargs) -> list[float | None]:
        _log_origin(self, kwargs)
        checks = [json.loads(c) if isinstance(c, str) else c for c in (check or [])]
        out = self.function(prompts=prompts, completions=completions, completion_ids=completion_ids,
                            check=checks or None, **kwargs)
        if not isinstance(out, (list, tuple)) or len(out) != len(completions):
            got = f"{len(out)} values" if isinstance(out, (list, tuple)) else type(out).__name__
            raise UserError(f"rewards: custom reward '{self.__name__}' returned {got}; it must return a list of "
                            f"{len(completions)} numbers (one per completion, None to abstain)")
        values = []
        for value in out:
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):  # fmt: skip
                raise UserError(f"rewards: custom reward '{self.__name__}' returned {value!r}; each reward must be "
                                "a finite number or None")
            values.append(None if value is None else float(value))
        return values


def load_custom_reward(label: str, recipe) -> CustomReward:
    """Import ``module:function`` (from sys.path, the recipe's folder or the working directory); UserError naming
    the recipe key when it cannot be imported or is not callable."""
    module_name, function_name = label.split(":")
    folders = [str(recipe.source_files[0].parent)] if recipe.source_files else []
    added = [f for f in (*folders, os.getcwd()) if f not in sys.path]
    sys.path[:0] = added
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure of user code is the user's to fix
        raise UserError(f"rewards: custom reward '{label}': importing {module_name} failed "
                        f"({type(exc).__name__}: {exc})") from None
    finally:
        for folder in added:
            sys.path.remove(folder)
    function = getattr(module, function_name, None)
    if not callable(function):
        where = Path(getattr(module, "__file__", "") or module_name)
        raise UserError(f"rewards: custom reward '{label}': {where} has no function '{function_name}'")
    log.info("rewards: custom reward %s from %s", label, getattr(module, "__file__", module_name))
    return CustomReward(label, function)
