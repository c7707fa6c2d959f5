"""Answer extraction and checking (math-verify), exact match, multiple choice and sacrebleu scores, on hand cases."""

from __future__ import annotations

import pytest

from qwen35_tune.eval.math_answers import answers_equivalent, extract_answer, last_boxed
from qwen35_tune.eval.text_metrics import bleu, choice_correct, chrf, exact_match


@pytest.mark.parametrize(("text", "expected"), [
    ("<think>Maybe 12? No: 53 + 27.</think>Ana has 80 apples. The answer is 80.", "80"),
    ("<think>so the result is \\boxed{3}</think> It is 7 apples.", "7"),  # after </think> wins
    ("<think>The answer is 5", None),  # ran out of budget inside the thinking: no final answer
    ("<think>so it is 12</think>\n\nI do not know.", None),  # numbers in the reasoning are not the answer
    ("<think>a</think> b <think>c is 4", None),  # a second think block never closed
    ("We get \\boxed{\\frac{1}{\\sqrt{2}}} in the end.", "\\frac{1}{\\sqrt{2}}"),  # nested braces kept
    ("first \\boxed{1}, then corrected: \\boxed{2}", "2"),
    ("The answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
    ("Final answer: -3", "-3"),
    ("The answer is 1,200 apples in total.", "1,200"),  # units after the number dropped
    ("The answer is 2x + 1.", "2x + 1"),
    ("The answer is 1 and 19.", "1 and 19"),
    ("12 + 30 = 42\n#### 1,234", "1,234"),
    ("I had 3, then 4.5 apples.", "4.5"),  # last number
    ("No idea, sorry.", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_last_boxed_unclosed_is_none():
    assert last_boxed("\\boxed{\\frac{1}{2}") is None
    assert extract_answer("\\boxed{12 and then 7") == "7"  # falls through to the last number


@pytest.mark.parametrize(("predicted", "gold"), [
    ("1/2", "0.5"),
    ("\\frac{1}{2}", "0.5"),
    ("\\frac{2}{4}", "1/2"),  # equivalent fractions
    ("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}"),
    ("1,234", "1234"),
    ("\\text{80}", "80"),
    ("80.0", "80"),
    ("2x+1", "1+2x"),
    ("Paris", "paris"),  # not math: normalised string compare
])
def test_equivalent_answers(predicted, gold):
    assert answers_equivalent(predicted, gold)


@pytest.mark.parametrize(("predicted", "gold"), [
    ("81", "80"), ("\\frac{1}{3}", "0.5"), ("-80", "80"), ("x+1", "x-1"), ("Lyon", "Paris"), (None, "1"),
])
def test_wrong_answers(predicted, gold):
    assert not answers_equivalent(predicted, gold)


def test_end_to_end_on_a_cot_output():
    output = "<think>54 - 1 = 53; 9 * 3 = 27; 53 + 27 = 80</think>\nShe has $\\boxed{\\dfrac{160}{2}}$ apples."
    assert answers_equivalent(extract_answer(output), "80")


def test_checking_works_off_the_main_thread():
    # math-verify's own timeout uses signal.alarm (main thread only); an eval callback may run elsewhere.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(answers_equivalent, "\\frac{2}{4}", "0.5").result()
        assert not pool.submit(answers_equivalent, "\\frac{1}{3}", "0.5").result()


def test_exact_match_ignores_case_space_punctuation():
    assert exact_match("  Paris. ", "paris")
    assert exact_match("New  York!", "new york")
    assert not exact_match("Paris", "Lyon")
    assert not exact_match("Paris", "Paris Hilton")


@pytest.mark.parametrize(("predicted", "ok"), [
    ("B", True), ("(b)", True), ("B) cat", True), ("The answer is B.", True), ("cat", True), ("It is a cat.", True),
    ("The answer is a cat", True), ("A", False), ("dog", False), ("dog or cat", False), ("D", False), ("", False),
])
def test_choice_correct(predicted, ok):
    choices = ["dog", "cat", "bird"]
    assert choice_correct(predicted, choices, "B") is ok
    assert choice_correct(predicted, choices, "cat") is ok  # gold given as the choice text


def test_chrf_and_bleu():
    assert chrf(["Bonjour."], ["Bonjour."]) == pytest.approx(100.0)
    assert 0.0 < chrf(["Bonsoir."], ["Bonjour."]) < 100.0
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert bleu(["a b c d"], ["w x y z"]) == pytest.approx(0.0)
    assert bleu(["早上好。"], ["早上好。"]) == pytest.approx(100.0)  # CJK: character-level, not one "word"
    with pytest.raises(ValueError):
        chrf(["a"], ["a", "b"])
