"""Verifiable rows (data-card ``format: verifiable``, for ``stage: grpo``): a prompt and what checks an answer to it.

Canonical form: ``{"messages": [the prompt turns], "check": {"kind": ..., ...}, ["enable_thinking"]}`` where the
check is one of ``{"kind": "math", "answer": "80"}`` (math-verify), ``{"kind": "code", "tests": [...] | "program"}``
(sandboxed tests), ``{"kind": "choice", "choices": [...], "label": index}`` (multiple choice) or
``{"kind": "translation", "reference": "..."}`` (chrF). A row with nothing to check, two different checks, or a
check that cannot be used raises ``BadRow`` with the reason (it goes to quarantine, like any bad row).
"""

from __future__ import annotations

import math
import re
from typing import Any

from qwen35_tune.data.bad_row import BadRow
from qwen35_tune.data.row_limits import MAX_MESSAGES, check_finite, check_nesting

CHECK_FIELDS = ("answer", "tests", "choices", "label", "reference")
_LETTER = re.compile(r"^\(?([A-Za-z])\)?$")


def _get(row: dict, columns: dict[str, str], name: str) -> Any:
    """The row's value of canonical field ``name`` (through the card's column mapping); None when absent."""
    return row.get(columns.get(name, name))


def verifiable_row(row: dict, columns: dict[str, str] | None = None) -> dict:
    """One raw row of a verifiable card -> canonical prompt + check (see the module docstring)."""
    from qwen35_tune.data.messages import check_texts, thinking_flag

    columns = columns or {}
    for kind in ("images", "videos"):
        if _get(row, columns, kind):
            raise BadRow(f"'{columns.get(kind, kind)}': rows with images or videos are not supported by the GRPO "
                         "stage yet (text prompts only)")
    out: dict[str, Any] = {"messages": _prompt_messages(row, columns), "check": _check(row, columns)}
    thinking = thinking_flag(_get(row, columns, "enable_thinking"), columns)
    if thinking is not None:
        out["enable_thinking"] = thinking
    check_nesting(out)
    check_finite(out)
    check_texts(out)
    return out


def _prompt_messages(row: dict, columns: dict[str, str]) -> list[dict]:
    """The prompt as messages: plain text becomes one user turn (after the optional system text); a message list must
    end with a user turn (the model answers it)."""
    from qwen35_tune.data.messages import clean_message, text_of

    key = columns.get("prompt", "prompt")
    if key not in row:
        raise BadRow(f"missing column '{key}'")
    prompt, system = row[key], _get(row, columns, "system")
    if system is not None and not isinstance(system, str):
        raise BadRow(f"'{columns.get('system', 'system')}' must be a string, not {type(system).__name__}")
    if isinstance(prompt, str):
        if not prompt.strip():
            raise BadRow(f"'{key}' is empty: there is nothing to answer")
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list):
        if len(prompt) > MAX_MESSAGES:
            raise BadRow(f"'{key}' has {len(prompt)} messages, more than {MAX_MESSAGES}")
        messages = [clean_message(message, i) for i, message in enumerate(prompt)]
        if not messages or messages[-1]["role"] != "user":
            raise BadRow(f"'{key}' must end with a user turn (the model's answer is what gets checked)")
        if not text_of(messages[-1]["content"]).strip():
            raise BadRow(f"'{key}': the last user turn is empty: there is nothing to answer")
    elif prompt is None:
        raise BadRow(f"'{key}' is null: there is nothing to answer")
    else:
        raise BadRow(f"'{key}' must be a string or a list of messages, not {type(prompt).__name__}")
    if system and system.strip():
        if messages[0]["role"] == "system":
            raise BadRow(f"both '{columns.get('system', 'system')}' and a system message in '{key}'; give one")
        messages.insert(0, {"role": "system", "content": system})
    if any(m["role"] == "system" for m in messages[1:]):
        raise BadRow("system message is not first")
    return messages


def _check(row: dict, columns: dict[str, str]) -> dict:
    """The row's one answer check; BadRow when there is none, more than one, or one that cannot be used."""
    given = [name for name in CHECK_FIELDS if _get(row, columns, name) is not None]
    named = lambda name: f"'{columns.get(name, name)}'"  # noqa: E731  (the user's column names in messages)
    kinds = [k for k, fields in (("math", ("answer",)), ("code", ("tests",)), ("choice", ("choices", "label")),
                                 ("translation", ("reference",))) if set(fields) & set(given)]  # fmt: skip
    if not kinds:
        raise BadRow("nothing to check an answer against: give answer (math), tests (code), choices + label "
                     "(multiple choice) or reference (translation)")
    if len(kinds) > 1:
        fields = ", ".join(named(f) for f in given)
        raise BadRow(f"checks an answer two ways ({fields}); a verifiable row has one check")
    kind = kinds[0]
    if kind == "math":
        return {"kind": "math", "answer": _math_answer(_get(row, columns, "answer"), named("answer"))}
    if kind == "code":
        return {"kind": "code", "tests": _tests(_get(row, columns, "tests"), named("tests"))}
    if kind == "translation":
        reference = _get(row, columns, "reference")
        if not isinstance(reference, str) or not reference.strip():
            raise BadRow(f"{named('reference')} must be a non-empty string (the reference translation)")
        return {"kind": "translation", "reference": reference}
    return _choice(_get(row, columns, "choices"), _get(row, columns, "label"), named)


def _math_answer(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRow(f"{name} must be a number or a string, not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRow(f"{name} is {value}, not an answer")
    text = str(value).strip()
    if not text:
        raise BadRow(f"{name} is empty: nothing to check an answer against")
    return text


def _tests(value: Any, name: str) -> list[str] | str:
    """Assert lines (a list) or a test program (a string); empty tests would pass any code."""
    if isinstance(value, str):
        if not value.strip():
            raise BadRow(f"{name} is empty: any code would pass")
        return value
    if not isinstance(value, list) or not value:
        raise BadRow(f"{name} must be a non-empty list of test lines or a test program (string)")
    if not all(isinstance(line, str) and line.strip() for line in value):
        raise BadRow(f"{name}: every test must be a non-empty string")
    return list(value)


def _choice(choices: Any, label: Any, named) -> dict:
    """Choices (two or more strings) and the label that names the right one: its index, its letter or its text."""
    if choices is None:
        raise BadRow(f"{named('label')} without {named('choices')}: nothing to pick from")
    if label is None:
        raise BadRow(f"{named('choices')} without {named('label')}: which choice is right is not given")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip()
                                                                     for c in choices):
        raise BadRow(f"{named('choices')} must be a list of two or more non-empty strings")
    if len(set(choices)) != len(choices):
        raise BadRow(f"{named('choices')} lists the same choice twice")
    index = None
    if isinstance(label, int) and not isinstance(label, bool):
        index = label
    elif isinstance(label, str) and label in choices:  # a choice's own text first ("A" may be a choice)
        index = choices.index(label)
    elif isinstance(label, str) and (letter := _LETTER.match(label.strip())):
        index = ord(letter.group(1).upper()) - ord("A")
    if index is None or not 0 <= index < len(choices):
        raise BadRow(f"{named('label')} {label!r} names none of the {len(choices)} choices (give its index from 0, "
                     "its letter or its text)")
    return {"kind": "choice", "choices": list(choices), "label": index}
