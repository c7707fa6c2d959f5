"""Normalise rows of every supported data-card format into one canonical conversation form.

Canonical form: ``{"messages": [{"role", "content", ["reasoning_content"], ["tool_calls"]}], "tools": [...]}``
(``"text"`` rows stay ``{"text": ...}``). Problems raise ``BadRow`` with a reason the quarantine file records.
"""

from __future__ import annotations

import json
import re
from typing import Any

from qwen35_tune.data.bad_row import BadRow
from qwen35_tune.data.row_limits import MAX_MEDIA, MAX_MESSAGES, check_finite, check_nesting

ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "tool": "tool", "function_call": "assistant", "observation": "tool"}
MEDIA_COLUMNS = ("images", "videos")
MEDIA_PART_TYPES = {"image": "image", "image_url": "image", "video": "video"}  # content part type -> media kind
# Tokens only the processor may place (one per image patch / video frame): written as text they would stand for
# media the row does not have, and the vision model fails on the count mismatch mid-training.
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
_INLINE_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)


def _col(row: dict, columns: dict[str, str], name: str) -> Any:
    key = columns.get(name, name)
    if key not in row:
        raise BadRow(f"missing column '{key}'")
    return row[key]


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _clean_message(msg: Any, index: int) -> dict:
    if not isinstance(msg, dict):
        raise BadRow(f"message {index} is not an object")
    role = msg.get("role")
    if role not in ROLES:
        raise BadRow(f"message {index}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
    content = msg.get("content")
    if content is None:
        content = ""
    if not isinstance(content, (str, list)):
        raise BadRow(f"message {index}: content must be a string or a list of parts")
    if isinstance(content, list):
        _check_parts(content, index)
    out: dict[str, Any] = {"role": role, "content": content}
    reasoning = msg.get("reasoning_content", msg.get("reasoning", msg.get("thinking")))
    if reasoning is not None and not isinstance(reasoning, str):
        raise BadRow(f"message {index}: reasoning must be a string, not {type(reasoning).__name__}")
    if role == "assistant" and isinstance(content, str) and reasoning is None:
        match = _INLINE_THINK.match(content)
        if match:  # inline <think>…</think> is split out so the template places it like Qwen does
            reasoning, out["content"] = match.group(1).strip("\n"), content[match.end():]
    if reasoning is not None and role == "assistant":
        out["reasoning_content"] = reasoning
    if msg.get("tool_calls"):
        out["tool_calls"] = [_clean_tool_call(call, index) for call in _json_list(msg["tool_calls"], index)]
    if role == "tool" and msg.get("name"):
        if not isinstance(msg["name"], str):
            raise BadRow(f"message {index}: a tool message's 'name' must be a string")
        out["name"] = msg["name"]
    if role == "assistant" and not text_of(out["content"]).strip() and not out.get("tool_calls"):
        raise BadRow(f"message {index}: empty assistant turn")
    return out


def _check_parts(parts: list, index: int) -> None:
    """Content parts as OpenAI and Qwen write them: text parts carry a string, image/video parts a reference."""
    for number, part in enumerate(parts):
        if not isinstance(part, dict):
            raise BadRow(f"message {index}: content part {number} is not an object")
        if "text" in part and not isinstance(part["text"], str):
            raise BadRow(f"message {index}: content part {number} has a 'text' that is not a string")
        kind = part.get("type", "text" if "text" in part else None)
        if kind not in ("text", "image", "video", "image_url") and not ({"image", "video", "image_url"} & part.keys()):
            raise BadRow(f"message {index}: content part {number} is neither text, image nor video")


def _from_json_string(value: Any, error: str) -> Any:
    """``value``, or what it decodes to when it is a JSON string (function-calling sets store tools, calls and
    arguments that way); ``error`` is the quarantine reason when it does not decode."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError):  # a JSONDecodeError; too deep for json's parser; an integer too long
        raise BadRow(error) from None


def _clean_tools(tools: Any) -> list[dict]:
    """The ``tools`` column: a list of tool schemas, or that list as a JSON string (as many function-calling sets
    store it)."""
    tools = _from_json_string(tools, "'tools' is a string but not valid JSON")
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise BadRow("'tools' must be a list of tool schemas (objects)")
    return tools


def _json_list(calls: Any, index: int) -> list:
    """A message's ``tool_calls``: a list, or a list written as a JSON string."""
    calls = _from_json_string(calls, f"message {index}: 'tool_calls' is a string but not valid JSON")
    if not isinstance(calls, list):
        raise BadRow(f"message {index}: 'tool_calls' must be a list of calls")
    return calls


def _media_list(value: Any, name: str) -> list:
    """A media column: one reference (path, URI, decoded image or Hub ``{bytes, path}``) or a list of them."""
    if isinstance(value, (bool, int, float)):
        raise BadRow(f"'{name}' must be a path or a list of paths, not {value!r}")
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(items) > MAX_MEDIA:
        raise BadRow(f"'{name}' lists {len(items)} entries, more than {MAX_MEDIA} per row")
    for number, item in enumerate(items):
        hub_bytes = isinstance(item, dict) and isinstance(item.get("bytes"), bytes)
        if not (isinstance(item, str) or hub_bytes or hasattr(item, "tobytes")):  # tobytes: a decoded (PIL) image
            raise BadRow(f"'{name}' entry {number} is a {type(item).__name__}, not a path, URI or image")
    return items


def _clean_tool_call(call: Any, index: int) -> dict:
    """OpenAI rows carry ``arguments`` as a JSON string; Qwen's template renders each argument, so decode it."""
    if not isinstance(call, dict):
        raise BadRow(f"message {index}: a tool call is not an object")
    function = call.get("function", call)
    if not isinstance(function, dict) or not function.get("name"):
        raise BadRow(f"message {index}: a tool call has no function name")
    if not isinstance(function["name"], str):
        raise BadRow(f"message {index}: a tool call's function name must be a string")
    arguments = _from_json_string(function.get("arguments") or {},
                                  f"message {index}: tool call arguments are not valid JSON")
    if not isinstance(arguments, dict):
        raise BadRow(f"message {index}: tool call arguments must be an object")
    return {"type": "function", "function": {"name": function["name"], "arguments": arguments}}


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
        _check_texts(text)
        return {"text": text}
    media = {}
    for kind in MEDIA_COLUMNS:  # carried through for the vision path; existence is checked by the card's reader
        value = row.get(columns.get(kind, kind))
        if value:
            media[kind] = _media_list(value, columns.get(kind, kind))
    out: dict[str, Any] = {"messages": _check_turns(_messages(row, fmt, columns, bool(media)))}
    tools = row.get(columns.get("tools", "tools"))
    if tools:
        out["tools"] = _clean_tools(tools)
    thinking = _thinking(row.get(columns.get("enable_thinking", "enable_thinking")), columns)
    if thinking is not None:
        out["enable_thinking"] = thinking
    out.update(media)
    _check_media_parts(out)
    check_nesting(out)  # tools and arguments given as JSON strings were decoded above: check what they hold too
    check_finite(out)
    _check_texts({k: v for k, v in out.items() if k not in MEDIA_COLUMNS})
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
            return [_clean_message(m, i) for i, m in enumerate(raw)]
        messages = []
        for i, turn in enumerate(raw):
            if not isinstance(turn, dict) or turn.get("from") not in SHAREGPT_ROLES:
                raise BadRow(f"turn {i}: unknown speaker {turn.get('from') if isinstance(turn, dict) else turn!r}")
            messages.append(_clean_message({"role": SHAREGPT_ROLES[turn["from"]], "content": turn.get("value")}, i))
        return messages
    if fmt == "alpaca":
        instruction, output = _prompt(row, columns, "instruction", has_media, (str,)), _col(row, columns, "output")
        extra = row.get(columns.get("input", "input"))
        if extra is not None and not isinstance(extra, str):
            raise BadRow(f"'{columns.get('input', 'input')}' must be a string, not {type(extra).__name__}")
        prompt = f"{instruction}\n\n{extra}" if extra else instruction
        return [_clean_message({"role": "user", "content": prompt}, 0),
                _clean_message({"role": "assistant", "content": output}, 1)]
    if fmt == "cot":  # chain-of-thought rows: the reasoning trains inside the final turn's think block
        question, answer = _prompt(row, columns, "question", has_media), _col(row, columns, "answer")
        reasoning = _col(row, columns, "reasoning")
        messages = [_clean_message({"role": "user", "content": question}, 0),
                    _clean_message({"role": "assistant", "content": answer, "reasoning_content": reasoning}, 1)]
        if columns.get("system", "system") in row and row[columns.get("system", "system")]:
            messages.insert(0, _clean_message({"role": "system", "content": row[columns.get("system", "system")]}, 0))
        return messages
    if fmt == "prompt_completion":
        prompt, completion = _prompt(row, columns, "prompt", has_media), _col(row, columns, "completion")
        return [_clean_message({"role": "user", "content": prompt}, 0),
                _clean_message({"role": "assistant", "content": completion}, 1)]
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


def _thinking(value: Any, columns: dict[str, str]) -> bool | None:
    """A row's own ``enable_thinking``: true, false or absent/null; anything else is a bad row, not ignored."""
    if value is None or isinstance(value, bool):
        return value
    key = columns.get("enable_thinking", "enable_thinking")
    raise BadRow(f"'{key}' must be true or false, not {str(value)[:40]!r}")


def media_part_kind(part: dict) -> str | None:
    """'image' or 'video' for a content part that stands for a medium (OpenAI's image_url included), else None."""
    kind = part.get("type")
    if kind in MEDIA_PART_TYPES:
        return MEDIA_PART_TYPES[kind]
    if kind is None:
        return next((MEDIA_PART_TYPES[key] for key in MEDIA_PART_TYPES if key in part), None)
    return None


def _check_media_parts(row: dict) -> None:
    """Image/video content parts need the row's ``images``/``videos``: without them the template would still write
    vision tokens, trained as text with no pixels behind them (and a vision model fails on the mismatch)."""
    for index, message in enumerate(row["messages"]):
        if not isinstance(message["content"], list):
            continue
        for number, part in enumerate(message["content"]):
            kind = media_part_kind(part)
            if kind is not None and not row.get(f"{kind}s"):
                raise BadRow(f"message {index}: content part {number} is an {kind}, but the row has no '{kind}s' "
                             "column giving its file")


def _check_texts(value: Any) -> None:
    """BadRow when any text in ``value`` (dict keys included) holds a token only the processor may place
    (``VISION_TOKENS``), or a lone surrogate (JSON's ``"\\ud800"``: not Unicode; no tokenizer or UTF-8 file takes
    it)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "<|" in item and (token := next((t for t in VISION_TOKENS if t in item), None)):
                raise BadRow(f"text holds '{token}', which only the image processor may place (it stands for "
                             "pixels the row does not have); remove it from the text")
            if not item.isascii() and (bad := _SURROGATE.search(item)):
                raise BadRow(f"text holds the lone surrogate {bad.group()!r}, which is not a Unicode character")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


_SURROGATE = re.compile("[\ud800-\udfff]")
