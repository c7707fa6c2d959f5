"""GRPO's rewards on hand-made completions: right and wrong answers, broken and half-right code, multiple choice,
translation, a missing </think>, too long; called the way TRL calls reward functions; custom rewards checked."""

from __future__ import annotations

import json
import time

import pytest

from qwen35_tune.errors import UserError
from qwen35_tune.train.rewards import (
    CodeTests,
    Completion,
    CustomReward,
    RewardFunction,
    correct_scores,
    format_score,
    length_score,
    load_custom_reward,
)

THINK_PROMPT = "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n"
PLAIN_PROMPT = "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
MATH = {"kind": "math", "answer": "80"}
CODE = {"kind": "code", "tests": ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]}
CHOICE = {"kind": "choice", "choices": ["Paris", "Lyon", "Nice"], "label": 0}
TRANSLATION = {"kind": "translation", "reference": "Merci beaucoup."}


def thinking(text: str, finished: bool = True, tokens: int = 20) -> Completion:
    return Completion(text, think_open=True, tokens=tokens, finished=finished)


def plain(text: str, finished: bool = True, tokens: int = 20) -> Completion:
    return Completion(text, think_open=False, tokens=tokens, finished=finished)


def correct(completion: Completion, check: dict, code: CodeTests | None = None) -> float:
    return correct_scores([completion], [check], code or CodeTests(timeout_s=10))[0]


@pytest.mark.parametrize(("text", "expected"), [
    ("54 - 1 = 53, 53 + 27 = 80.</think>\n\nThe answer is 80.", 1.0),
    ("Start with 54.</think>\n\nShe has \\boxed{80} apples.", 1.0),
    ("It is 80.</think>\n\nThe answer is 79.", 0.0),  # the reasoning's 80 is not the answer
    ("It is 80, so the answer is 80", 0.0),  # no </think>: still thinking, no answer at all
    ("</think>\n\n160/2", 1.0),  # math-verify: equivalent forms count
])
def test_math_answers(text, expected):
    assert correct(thinking(text), MATH) == expected


def test_non_thinking_answer_is_the_whole_text():
    assert correct(plain("The answer is 80."), MATH) == 1.0
    assert correct(plain("81"), MATH) == 0.0


def test_code_pass_fraction_broken_and_missing():
    fence = "</think>\n\n```python\n{}\n```"
    assert correct(thinking(fence.format("def add(a, b):\n    return a + b")), CODE) == 1.0
    assert correct(thinking(fence.format("def add(a, b):\n    return 5")), CODE) == 0.5  # one of two tests
    assert correct(thinking(fence.format("def add(a, b) return a + b")), CODE) == 0.0  # syntax error
    assert correct(thinking("</think>\n\nreturn a + b"), CODE) == 0.0  # no code block
    assert correct(thinking("```python\ndef add(a, b):\n    return a + b\n```"), CODE) == 0.0  # code inside <think>


def test_a_test_program_is_one_run():
    program = {"kind": "code", "tests": "assert add(1, 1) == 2\nassert add(2, 2) == 5\n"}
    assert correct(plain("```python\ndef add(a, b):\n    return a + b\n```"), program) == 0.0


def test_multiple_choice_and_translation():
    assert correct(plain("A"), CHOICE) == 1.0
    assert correct(plain("The answer is (A)"), CHOICE) == 1.0
    assert correct(plain("Paris"), CHOICE) == 1.0
    assert correct(plain("B"), CHOICE) == 0.0
    assert correct(plain("Merci beaucoup."), TRANSLATION) == pytest.approx(1.0)
    partial = correct(plain("Merci bien."), TRANSLATION)
    assert 0.0 < partial < 0.8
    assert correct(plain("Bonjour."), TRANSLATION) < partial


@pytest.mark.parametrize(("completion", "expected"), [
    (thinking("reasoning</think>\n\n80"), 1.0),
    (thinking("reasoning then 80"), 0.0),  # missing </think>
    (thinking("a</think>b</think>\n\n80"), 0.0),  # closed twice
    (thinking("<think>again</think>\n\n80"), 0.0),  # a second block opened
    (thinking("reasoning</think>\n\n"), 0.0),  # nothing after the block
    (thinking("reasoning</think>\n\n80", finished=False), 0.0),  # cut off at the token budget
    (plain("80"), 1.0),  # non-thinking mode: a plain answer
    (plain("hmm</think>\n\n80"), 0.0),  # think tags in a non-thinking answer
])
def test_format(completion, expected):
    assert format_score(completion) == expected


def test_length_penalty_starts_past_the_budget():
    assert length_score(plain("x", tokens=100), 100, 200) == 0.0
    assert length_score(plain("x", tokens=150), 100, 200) == pytest.approx(-0.5)
    assert length_score(plain("x", tokens=200), 100, 200) == -1.0
    assert length_score(plain("x", tokens=10), 100, 200) == 0.0


def test_called_like_trl_calls_reward_functions():
    """prompts / completions / completion_ids plus the dataset's columns: the prompt decides the thinking mode and
    the last id whether the completion finished."""
    fn = RewardFunction("format", lambda cs, ks: [format_score(c) for c in cs])
    fn.eos_ids = {7}
    out = fn(prompts=[THINK_PROMPT, PLAIN_PROMPT, THINK_PROMPT], completions=["r</think>\n\n8", "8", "r</think>\n\n8"],
             completion_ids=[[1, 2, 7], [3, 7], [1, 2, 3]], check=[json.dumps(MATH)] * 3, origin=["a", "b", "c"],
             trainer_state=None, log_extra=lambda *a: None, log_metric=lambda *a: None)
    assert out == [1.0, 1.0, 0.0]
    assert fn.__name__ == "format"  # TRL logs rewards/format/mean and /std


def test_origin_goes_to_the_completion_log_once():
    logged = []
    first, second = (RewardFunction(n, lambda cs, ks: [0.0] * len(cs)) for n in ("a", "b"))
    first.log_origin = True
    for fn in (first, second):
        fn(prompts=["p"], completions=["x"], completion_ids=[[1]], check=[json.dumps(MATH)], origin=["card:f:3"],
           log_extra=lambda column, values: logged.append((column, values)))
    assert logged == [("origin", ["card:f:3"])]


def test_code_rows_run_in_parallel_within_their_limits():
    """Many completions at once: each sandboxed run keeps its own time limit, and the bounded pool runs them side by
    side (6 endless loops with a 1 s limit on 3 workers take about 2 s, not 6)."""
    loop = plain("```python\ndef add(a, b):\n    while True:\n        pass\n```")
    tests = CodeTests(timeout_s=1.0, workers=3)
    check = {"kind": "code", "tests": ["assert add(1, 2) == 3"]}
    started = time.monotonic()
    scores = correct_scores([loop] * 6, [check] * 6, tests)
    elapsed = time.monotonic() - started
    assert scores == [0.0] * 6
    assert elapsed < 6 * 1.0, elapsed
    hog = plain("```python\nblob = bytearray(512 * 1024 * 1024)\ndef add(a, b):\n    return a + b\n```")
    assert correct_scores([hog], [check], CodeTests(timeout_s=10, memory_mb=256))[0] == 0.0  # memory limit held


def test_identical_code_in_a_group_runs_once(monkeypatch):
    calls = []
    import qwen35_tune.eval.code_sandbox as sandbox

    real = sandbox.run_with_tests

    def counting(code, tests, **kwargs):
        calls.append(tests)
        return real(code, tests, **kwargs)

    monkeypatch.setattr(sandbox, "run_with_tests", counting)
    good = plain("```python\ndef add(a, b):\n    return a + b\n```")
    assert correct_scores([good] * 4, [CODE] * 4, CodeTests()) == [1.0] * 4
    assert len(calls) == 2  # two tests, run once each for the four identical completions


def test_custom_reward_is_loaded_from_the_recipe_folder_and_its_output_checked(tmp_path):
    from types import SimpleNamespace

    (tmp_path / "grpo_custom_rewards.py").write_text(
        "def brevity(completions, check, **kwargs):\n"
        "    assert check[0]['kind'] == 'math'\n"
        "    return [-len(c) / 100 for c in completions]\n"
        "def broken(completions, **kwargs):\n"
        "    return [1.0]\n"
        "def nan(completions, **kwargs):\n"
        "    return [float('nan')] * len(completions)\n")
    recipe = SimpleNamespace(source_files=(tmp_path / "recipe.yaml",))
    brevity = load_custom_reward("grpo_custom_rewards:brevity", recipe)
    assert isinstance(brevity, CustomReward) and brevity.__name__ == "grpo_custom_rewards:brevity"
    kwargs = {"prompts": ["p", "p"], "completion_ids": [[1], [2]], "check": [json.dumps(MATH)] * 2}
    assert brevity(completions=["ab", "abcd"], **kwargs) == [-0.02, -0.04]
    with pytest.raises(UserError, match="returned 1 values"):
        load_custom_reward("grpo_custom_rewards:broken", recipe)(completions=["a", "b"], **kwargs)
    with pytest.raises(UserError, match="finite number"):
        load_custom_reward("grpo_custom_rewards:nan", recipe)(completions=["a", "b"], **kwargs)
    with pytest.raises(UserError, match="has no function 'missing'"):
        load_custom_reward("grpo_custom_rewards:missing", recipe)
    with pytest.raises(UserError, match="importing no_such_mod_q35 failed"):
        load_custom_reward("no_such_mod_q35:f", recipe)
