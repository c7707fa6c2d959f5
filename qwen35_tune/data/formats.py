"""Normalise rows of every supported data-card format into one canonical conversation form.

Canonical form: ``{"messages": [{"role", "content", ["reasoning_content"], ["tool_calls"]}], "tools": [...]}``
(``"text"`` rows stay ``{"text": ...}``). Problems raise ``BadRow`` with a reason the quarantine file records.
"""

from __future__ import annotations

from typing import Any

from qwen35_tune.data.bad_row import BadRow
from qwen35_tune.data.messages import (
    MEDIA_COLUMNS,
    check_media_parts,
    check_texts,
    clean_message,
    clean_tools,
    media_list,
    thinking_flag,
)
from qwen35_tune.data.row_limits import MAX_MESSAGES, check_finite, check_nesting

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "tool": "tool", "function_call": "assistant", "observation": "tool"}


def _col(row: dict, columns: dict[str, str], name: str) -> Any:
    key = columns.get(name, name)
    if key not in row:
        raise BadRow(f"missing column '{key}'")
    return row[key]


def _check_turns(messages: list[dict]) -> list[dict]:
    if not messages:
        raise BadRow("no messages")
    if not any(m["role"] == "assistant" for m in messages):
        raise BadRow("no assistant turn to train on")
    if any(m["role"] == "system" for m in messages[1:]):
        raise BadRow("system message is not first")
    return messages


def normalise_row(row: dict, fmt: str, columns: dict[str, str] | None = None) -> dict:
    """One raw row of a data-card format → canonical conversation (or ``{"text": ...}`` for plain text)."""
    columns = columns or {}
    if fmt == "preference":  # a pair, as the conversation it prefers (stage: dpo trains on both: data/preference.py)
        from qwen35_tune.data.preference import preferred_conversation

        return preferred_conversation(row, columns)
    if fmt == "verifiable":  # stage: grpo prompts with an answer check
        from qwen35_tune.data.verifiable import verifiable_row

        return verifiable_row(row, columns)
    if fmt == "text":
        text = _col(row, columns, "text")
        if not isinstance(text, str) or not text.strip():
            raise BadRow("empty text")
        check_texts(text)
        return {"text": text}
    media = {}
    for kind in MEDIA_COLUMNS:  # carried through for the vision path; existence is checked by the card's reader
        value = row.get(columns.get(kind, kind))
        if value:
            media[kind] = media_list(value, columns.get(kind, kind))
    out: dict[str, Any] = {"messages": _check_turns(_messages(row, fmt, columns, bool(media)))}
    tools = row.get(columns.get("tools", "tools"))
    if tools:
        out["tools"] = clean_tools(tools)
    thinking = thinking_flag(row.get(columns.get("enable_thinking", "enable_thinking")), columns)
    if thinking is not None:
        out["enable_thinking"] = thinking
    out.update(media)
    check_media_parts(out)
    check_nesting(out)  # tools and arguments given as JSON strings were decoded above: check what they hold too
    check_finite(out)
    check_texts({k: v for k, v in out.items() if k not in MEDIA_COLUMNS})
    return out


def _messages(row: dict, fmt: str, columns: dict[str, str], has_media: bool) -> list[dict]:
    """The row's conversation as cleaned messages, for every format but plain text."""
    if fmt in ("messages", "sharegpt"):
        raw = _col(row, columns, "messages" if fmt == "messages" else "conversations")
        if not isinstance(raw, list):
            raise BadRow(f"'{columns.get(FORMAT_COLUMN[fmt], FORMAT_COLUMN[fmt])}' is not a list")
        if len(raw) > MAX_MESSAGES:
            raise BadRow(f"row has {len(raw)} messages, more than {MAX_MESSAGES}: each assistant turn renders the "
                         "conversation before it, so the work grows with the square of its length; split it")
        if fmt == "messages":
            return [clean_message(m, i) for i, m in enumerate(raw)]
        messages = []
        for i, turn in enumerate(raw):
            if not isinstance(turn, dict) or turn.get("from") not in SHAREGPT_ROLES:
                raise BadRow(f"turn {i}: unknown speaker {turn.get('from') if isinstance(turn, dict) else turn!r}")
            messages.append(clean_message({"role": SHAREGPT_ROLES[turn["from"]], "content": turn.get("value")}, i))
        return messages
    if fmt == "alpaca":
        instruction, output = _prompt(row, columns, "instruction", has_media, (str,)), _col(row, columns, "output")
        extra = row.get(columns.get("input", "input"))
        if extra is not None and not isinstance(extra, str):
            raise BadRow(f"'{columns.get('input', 'input')}' must be a string, not {type(extra).__name__}")
        prompt = f"{instruction}\n\n{extra}" if extra else instruction
        return [clean_message({"role": "user", "content": prompt}, 0),
                clean_message({"role": "assistant", "content": output}, 1)]
    if fmt == "cot":  # chain-of-thought rows: the reasoning trains inside the final turn's think block
        question, answer = _prompt(row, columns, "question", has_media), _col(row, columns, "answer")
        reasoning = _col(row, columns, "reasoning")
        messages = [clean_message({"role": "user", "content": question}, 0),
                    clean_message({"role": "assistant", "content": answer, "reasoning_content": reasoning}, 1)]
        if columns.get("system", "system") in row and row[columns.get("system", "system")]:
            messages.insert(0, clean_message({"role": "system", "content": row[columns.get("system", "system")]}, 0))
        return messages
    if fmt == "prompt_completion":
        prompt, completion = _prompt(row, columns, "prompt", has_media), _col(row, columns, "completion")
        return [clean_message({"role": "user", "content": prompt}, 0),
                clean_message({"role": "assistant", "content": completion}, 1)]
    raise BadRow(f"unsupported format '{fmt}'")


FORMAT_COLUMN = {"messages": "messages", "sharegpt": "conversations"}


def _prompt(row: dict, columns: dict[str, str], name: str, has_media: bool, kinds: tuple = (str, list)) -> Any:
    """The prompt field of a single-turn format: a null, another type, or (without images or videos) blank text
    would train the answer with no question in front of it."""
    key = columns.get(name, name)
    value = _col(row, columns, name)
    if value is None:
        raise BadRow(f"'{key}' is null: the answer would be trained without a prompt")
    if not isinstance(value, kinds):
        raise BadRow(f"'{key}' must be a string, not {type(value).__name__}")
    if isinstance(value, str) and not value.strip() and not has_media:
        raise BadRow(f"'{key}' is empty: the answer would be trained without a prompt")
    return value


