"""Preference rows (data-card ``format: preference``) → one canonical pair: a prompt conversation and the chosen and
rejected assistant answers to it.

The layouts public preference sets use map through the card's ``columns:``:

- ``prompt`` / ``chosen`` / ``rejected`` as strings (a one-turn user prompt; ``system`` optional), or the prompt as a
  message list and each answer as an assistant message or a one-message list (TRL's conversational layout);
- ``chosen`` / ``rejected`` as whole conversations that share everything but the final assistant answer
  (UltraFeedback-binarized; a ``prompt`` column next to them is then not needed and not read);
- ``chosen`` / ``rejected`` as plain-text transcripts in the Anthropic HH layout
  (``\\n\\nHuman: …\\n\\nAssistant: …``), split into turns and then read like whole conversations.

Answers keep reasoning as SFT rows do (``reasoning_content`` or an inline ``<think>`` block). A row that cannot be one
pair is a ``BadRow`` with its reason: no prompt, an empty answer, two identical answers, conversations that differ
before their last answer.
"""

from __future__ import annotations

import re
from typing import Any

from qwen35_tune.data.bad_row import BadRow
from qwen35_tune.data.messages import (
    MEDIA_COLUMNS,
    check_media_parts,
    check_texts,
    clean_message,
    clean_tools,
    media_list,
    text_of,
    thinking_flag,
)
from qwen35_tune.data.row_limits import MAX_MESSAGES, check_finite, check_nesting

# Anthropic HH transcripts: "\n\nHuman: ...\n\nAssistant: ..." (the first speaker sometimes without the blank lines).
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant): ?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _key(columns: dict[str, str], name: str) -> str:
    return columns.get(name, name)


def _hh_messages(text: str) -> list[dict] | None:
    """The turns of an HH transcript, or None when ``text`` is not one (no Human and Assistant markers)."""
    marks = list(_HH_TURN.finditer(text))
    if not marks or {m.group(1) for m in marks} != {"Human", "Assistant"} or text[: marks[0].start()].strip():
        return None
    turns = []
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        content = text[mark.end(): following.start() if following else len(text)]
        turns.append({"role": _HH_ROLES[mark.group(1)], "content": content.strip()})
    return turns


def _messages(value: Any, key: str) -> list[dict]:
    """One side of a pair (an answer, or a whole conversation) as cleaned messages."""
    if isinstance(value, str):
        if not value.strip():
            raise BadRow(f"'{key}' is empty")
        raw = _hh_messages(value) or [{"role": "assistant", "content": value}]
    elif isinstance(value, dict):
        raw = [value]
    elif isinstance(value, list):
        raw = value
    else:
        raise BadRow(f"'{key}' must be text or a list of messages, not {type(value).__name__}")
    if not raw:
        raise BadRow(f"'{key}' is empty")
    if len(raw) > MAX_MESSAGES:
        raise BadRow(f"'{key}' has {len(raw)} messages, more than {MAX_MESSAGES}")
    try:
        return [clean_message(message, i) for i, message in enumerate(raw)]
    except BadRow as exc:
        raise BadRow(f"'{key}' {exc}") from None


def _is_conversation(messages: list[dict]) -> bool:
    return any(m["role"] != "assistant" for m in messages)


def _answer(messages: list[dict], key: str) -> dict:
    """The single assistant message of an answer-only side."""
    if len(messages) != 1:
        raise BadRow(f"'{key}' holds {len(messages)} assistant messages: an answer is one assistant message (or give "
                     "chosen and rejected as whole conversations that share the prompt)")
    return messages[0]


def _split_shared(chosen: list[dict], rejected: list[dict], keys: tuple[str, str]) -> tuple[list, dict, dict]:
    """(prompt, chosen answer, rejected answer) of two conversations sharing all but their final assistant answer;
    a side given as the answer alone shares the other side's prompt."""
    if not _is_conversation(chosen):
        chosen = [*rejected[:-1], _answer(chosen, keys[0])]
    if not _is_conversation(rejected):
        rejected = [*chosen[:-1], _answer(rejected, keys[1])]
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == len(chosen) and shared == len(rejected):
        raise BadRow("chosen and rejected are the same answer: the pair teaches nothing")
    tails = (chosen[shared:], rejected[shared:])
    if any(len(tail) != 1 or tail[0]["role"] != "assistant" for tail in tails):
        raise BadRow(f"'{keys[0]}' and '{keys[1]}' must be the same conversation up to their final assistant answer "
                     f"(they differ from message {shared} on)")
    return chosen[:shared], tails[0][0], tails[1][0]


def _prompt(row: dict, columns: dict[str, str], has_media: bool) -> list[dict]:
    """The prompt column as messages (text is one user turn, after the optional ``system`` column)."""
    key = _key(columns, "prompt")
    if key not in row:
        raise BadRow(f"missing column '{key}' (and chosen / rejected are answers, not whole conversations)")
    value = row[key]
    if value is None:
        raise BadRow(f"'{key}' is null: the answers would be compared with no prompt in front of them")
    if isinstance(value, str):
        if not value.strip() and not has_media:
            raise BadRow(f"'{key}' is empty: the answers would be compared with no prompt in front of them")
        messages = [{"role": "user", "content": value}]
    elif isinstance(value, list):
        if not value:
            raise BadRow(f"'{key}' is an empty list of messages")
        messages = value
    else:
        raise BadRow(f"'{key}' must be text or a list of messages, not {type(value).__name__}")
    if len(messages) > MAX_MESSAGES:
        raise BadRow(f"'{key}' has {len(messages)} messages, more than {MAX_MESSAGES}")
    system = row.get(_key(columns, "system"))
    if system and not any(isinstance(m, dict) and m.get("role") == "system" for m in messages):
        messages = [{"role": "system", "content": system}, *messages]
    try:
        return [clean_message(message, i) for i, message in enumerate(messages)]
    except BadRow as exc:
        raise BadRow(f"'{key}' {exc}") from None


def _same_answer(a: dict, b: dict) -> bool:
    def key(m: dict) -> tuple:
        return (" ".join(text_of(m["content"]).split()), " ".join((m.get("reasoning_content") or "").split()),
                repr(m.get("tool_calls")))
    return key(a) == key(b)


def normalise_preference(row: dict, columns: dict[str, str] | None = None) -> dict:
    """One raw preference row → ``{"prompt": [messages], "chosen": message, "rejected": message}`` plus the row's
    ``tools``, ``enable_thinking``, ``images`` and ``videos``; a row that is not one usable pair raises BadRow."""
    columns = columns or {}
    keys = (_key(columns, "chosen"), _key(columns, "rejected"))
    for key in keys:
        if key not in row:
            raise BadRow(f"missing column '{key}'")
    media = {}
    for kind in MEDIA_COLUMNS:
        value = row.get(_key(columns, kind))
        if value:
            media[kind] = media_list(value, _key(columns, kind))
    chosen, rejected = _messages(row[keys[0]], keys[0]), _messages(row[keys[1]], keys[1])
    if _is_conversation(chosen) or _is_conversation(rejected):
        prompt, answer, other = _split_shared(chosen, rejected, keys)
    else:
        prompt = _prompt(row, columns, bool(media))
        answer, other = _answer(chosen, keys[0]), _answer(rejected, keys[1])
    if not prompt or prompt[-1]["role"] == "assistant":
        raise BadRow("the prompt must end with a user (or tool) message that the answers reply to")
    if any(m["role"] == "system" for m in prompt[1:]):
        raise BadRow("system message is not first")
    for key, message in zip(keys, (answer, other), strict=True):
        if message["role"] != "assistant":
            raise BadRow(f"'{key}' must be an assistant answer, not a {message['role']} message")
    if _same_answer(answer, other):
        raise BadRow("chosen and rejected are the same answer: the pair teaches nothing")
    pair: dict[str, Any] = {"prompt": prompt, "chosen": answer, "rejected": other}
    tools = row.get(_key(columns, "tools"))
    if tools:
        pair["tools"] = clean_tools(tools)
    thinking = thinking_flag(row.get(_key(columns, "enable_thinking")), columns)
    if thinking is not None:
        pair["enable_thinking"] = thinking
    pair.update(media)
    for side in pair_rows(pair):
        check_media_parts(side)
    check_nesting(pair)
    check_finite(pair)
    check_texts({k: v for k, v in pair.items() if k not in MEDIA_COLUMNS})
    return pair


def pair_rows(pair: dict) -> tuple[dict, dict]:
    """The two canonical conversations a pair is rendered as: prompt + chosen, prompt + rejected (the row's tools,
    thinking flag and media on both)."""
    extra = {k: v for k, v in pair.items() if k not in ("prompt", "chosen", "rejected")}
    return ({"messages": [*pair["prompt"], pair["chosen"]], **extra},
            {"messages": [*pair["prompt"], pair["rejected"]], **extra})


def pair_key_row(pair: dict) -> dict:
    """A canonical-looking row holding the whole pair, for the hygiene checks (duplicates, eval overlap)."""
    extra = {k: v for k, v in pair.items() if k in MEDIA_COLUMNS}
    return {"messages": [*pair["prompt"], pair["chosen"], {**pair["rejected"], "role": "rejected"}], **extra}


def preferred_conversation(row: dict, columns: dict[str, str] | None = None) -> dict:
    """The canonical conversation a preference row prefers (prompt + chosen answer): what ``normalise_row`` gives
    for ``format: preference``, so previews, eval prompts and references read a pair like any conversation row."""
    return pair_rows(normalise_preference(row, columns))[0]
