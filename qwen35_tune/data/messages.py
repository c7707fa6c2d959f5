"""Checks and clean-ups of the parts every row format shares: messages, tool calls, media columns, texts.

A module of its own (below ``formats``) so the stage formats (``preference``, ``verifiable``) that reuse them and
``formats``, which dispatches to those, import without a cycle.
"""

from __future__ import annotations

import json
import re
from typing import Any

from qwen35_tune.data.bad_row import BadRow
from qwen35_tune.data.row_limits import MAX_MEDIA

ROLES = ("system", "user", "assistant", "tool")
MEDIA_COLUMNS = ("images", "videos")
MEDIA_PART_TYPES = {"image": "image", "image_url": "image", "video": "video"}  # content part type -> media kind
# Tokens only the processor may place (one per image patch / video frame): written as text they would stand for
# media the row does not have, and the vision model fails on the count mismatch mid-training.
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
_INLINE_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def clean_message(msg: Any, index: int) -> dict:
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


def clean_tools(tools: Any) -> list[dict]:
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


def media_list(value: Any, name: str) -> list:
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


def thinking_flag(value: Any, columns: dict[str, str]) -> bool | None:
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


def check_media_parts(row: dict) -> None:
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


def check_texts(value: Any) -> None:
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
