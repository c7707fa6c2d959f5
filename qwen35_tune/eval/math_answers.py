"""Math answers: pull the final answer out of a model's output and check it against the gold answer.

Checking is math-verify's (symbolic equivalence: 1/2 == 0.5 == \\frac{1}{2}). Extraction is ours: math-verify
parses *an* expression out of free text, but a chain of thought is full of intermediate numbers, and the final
answer has to be picked by the conventions reasoning models are trained on (after </think>, \\boxed{}, "The answer
is", "####", else the last number), which no library here exposes as a function.
"""

from __future__ import annotations

import logging
import re
import threading

log = logging.getLogger(__name__)

THINK_START, THINK_END = "<think>", "</think>"
_ANSWER_IS = re.compile(r"(?:the\s+)?(?:final\s+)?answer\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)
_HASHES = re.compile(r"####\s*(.+)")
# A number: optional sign, digits with optional thousands commas, optional decimals, optional /denominator.
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?:/\d+)?|-?\d+(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def extract_answer(text: str) -> str | None:
    """The final answer in ``text`` (only what follows </think>; None inside an unclosed <think>), or None.

    Tried in order: the last \\boxed{...} (nested braces kept), the last "The answer is ...", "#### ...", and
    finally the last number. Reasoning is never searched: a number from a chain of thought (or from one cut off by
    the token budget) is not the model's answer.
    """
    if not text:
        return None
    final = text.rsplit(THINK_END, 1)[1] if THINK_END in text else text
    return None if THINK_START in final else _extract(final)


def _extract(text: str) -> str | None:
    boxed = last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    for pattern in (_ANSWER_IS, _HASHES):
        matches = [m.group(1) for m in pattern.finditer(text)]
        if matches:
            answer = _trim_sentence(matches[-1])
            if answer:
                return answer
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} / \\fbox{...}, matching nested braces; None if absent or unclosed."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def _trim_sentence(answer: str) -> str:
    """'80. Done' -> '80'; '$\\frac{1}{2}$.' -> '\\frac{1}{2}' (the answer ends at the line / sentence end)."""
    answer = answer.strip().splitlines()[0] if answer.strip() else ""
    boxed = last_boxed(answer)
    if boxed is not None:
        return boxed.strip()
    answer = re.split(r"\.\s|\.$", answer, maxsplit=1)[0]  # a sentence-ending period, not a decimal point
    answer = answer.strip().strip("$*").strip().rstrip(".,;:!").strip()
    # "80 apples" -> "80" (a unit after the number), but "1 and 19" stays a list.
    number_then_words = re.match(r"^(-?\d[\d,]*(?:\.\d+)?(?:/\d+)?)\s+(?!and\b|or\b)[A-Za-z]{2,}", answer)
    return number_then_words.group(1) if number_then_words else answer


def _normalise(answer: str) -> str:
    """Plain-string form for the fallback compare: no $, \\text{}, spaces, thousands commas or case."""
    answer = re.sub(r"\\(?:text|mathrm|textbf)\{([^{}]*)\}", r"\1", answer)
    answer = _THOUSANDS.sub("", answer)
    answer = answer.replace("$", "").replace("\\!", "").replace("\\,", "").replace("\\ ", "")
    return re.sub(r"\s+", "", answer).rstrip(".").lower()


def _parse(answer: str):
    """math-verify's parse of one answer (wrapped in $...$ so LaTeX and plain text both parse), or [] on failure."""
    from math_verify import parse

    # math-verify times out with signal.alarm, which only works on the main thread; elsewhere run without one.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    text = _THOUSANDS.sub("", answer.strip())
    try:
        parsed = parse(text if "$" in text or "\\boxed" in text else f"${text}$", parsing_timeout=timeout)
        return parsed or parse(text, parsing_timeout=timeout)
    except Exception as exc:  # a parser crash on odd input means "could not parse", never a failed eval
        log.debug("math-verify could not parse %r: %s", answer, exc)
        return []


def answers_equivalent(predicted: str, gold: str) -> bool:
    """Whether ``predicted`` equals ``gold`` symbolically (math-verify), else as normalised strings."""
    if predicted is None or gold is None:
        return False
    predicted, gold = str(predicted), str(gold)
    if _normalise(predicted) == _normalise(gold):
        return True
    gold_parsed, predicted_parsed = _parse(gold), _parse(predicted)
    if not gold_parsed or not predicted_parsed:
        return False
    from math_verify import verify

    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        return bool(verify(gold_parsed, predicted_parsed, timeout_seconds=timeout))
    except Exception as exc:
        log.debug("math-verify could not compare %r with %r: %s", predicted, gold, exc)
        return False
