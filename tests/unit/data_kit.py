"""Builders the data tests share: card and recipe files, chat rows, and random conversations with what they hold."""

from __future__ import annotations

import json
from pathlib import Path

from qwen35_tune.recipe import load_recipe


def write_card(tmp_path: Path, name: str, rows: list[dict], **extra) -> Path:
    """A jsonl of ``rows`` and its card ``name``.yaml (``extra`` keys added) in ``tmp_path``; the card's path."""
    (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = [f"name: {name}", "license: mit", f"source: {{path: {name}.jsonl}}"]
    lines += [f"{k}: {json.dumps(v)}" for k, v in extra.items()]
    (tmp_path / f"{name}.yaml").write_text("\n".join(lines) + "\n")
    return tmp_path / f"{name}.yaml"


def write_recipe(tmp_path: Path, data: str, overrides=()) -> object:
    """A tiny://dense recipe with the given ``data:`` section (YAML lines), loaded with ``overrides``."""
    path = tmp_path / "recipe.yaml"
    path.write_text(f"name: t\nmodel: {{name_or_path: 'tiny://dense'}}\ntrain: {{max_length: 64}}\ndata:\n{data}")
    return load_recipe(path, list(overrides))


def chat_row(q: str, a: str) -> dict:
    """One user question and its assistant answer."""
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def random_conversation(rng, content_parts: bool = True) -> dict:
    """A conversation mixing what real cards hold: system prompts, several turns, reasoning (as a field, inline, or
    empty), tool calls with their results, and text with CJK, emoji, combining marks and stray whitespace."""
    words = ["yield", "bond", "数学", "🙂", "e\u0301t\u00e9", "  ", "\n", "3.5%", "<b>", "Paris", "¿qué?", "x" * 12]

    def text():  # never blank: an empty assistant turn is a bad row before rendering, which is not tested here
        return rng.choice(words[:4]) + "".join(rng.choice(words) + rng.choice(["", " ", "\n\n"])
                                               for _ in range(rng.randint(0, 8)))

    messages = [{"role": "system", "content": text()}] if rng.random() < 0.4 else []
    row: dict = {}
    for _ in range(rng.randint(1, 3)):
        parts = content_parts and rng.random() < 0.2
        messages.append({"role": "user", "content": [{"type": "text", "text": text()}] if parts else text()})
        for _ in range(rng.choice([0, 0, 1, 2])):  # a chain of tool steps, some with parallel calls
            calls = [{"type": "function", "function": {"name": "lookup", "arguments": {"q": text()}}}
                     for _ in range(rng.randint(1, 2))]
            if rng.random() < 0.3:  # OpenAI rows carry arguments as a JSON string
                calls[0]["function"]["arguments"] = json.dumps(calls[0]["function"]["arguments"], ensure_ascii=False)
            step = {"role": "assistant", "content": text() if rng.random() < 0.3 else "", "tool_calls": calls}
            if rng.random() < 0.3:
                step["reasoning_content"] = text()
            messages.append(step)
            messages.extend({"role": "tool", "content": text()} for _ in calls)
            row["tools"] = [{"type": "function", "function": {
                "name": "lookup", "description": "Look up.",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
        style = rng.choice(["plain", "field", "inline", "empty"])
        answer = {"role": "assistant", "content": text()}
        if style == "field":
            answer["reasoning_content"] = text()
        elif style == "inline":
            answer["content"] = f"<think>\n{text()}\n</think>\n\n{answer['content']}"
        elif style == "empty":
            answer["content"] = "<think>\n\n</think>\n\n" + answer["content"]
        messages.append(answer)
    if rng.random() < 0.2:
        row["enable_thinking"] = False
    return {"messages": messages, **row}


def conversation_features(raw: dict) -> set[str]:
    """What a random conversation holds of the cases the renderer once got wrong or must keep right."""
    messages = raw["messages"]
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    found = {"thinking off"} if raw.get("enable_thinking") is False else set()
    for i, message in enumerate(messages):
        calls = message.get("tool_calls") or []
        content = message["content"]
        if calls and i < last_user:  # trained as it stands in the full render (the stand-in diff)
            found.add("tool chain before a later question")
        checks = {"parallel calls": len(calls) > 1,
                  "JSON-string arguments": any(isinstance(c["function"]["arguments"], str) for c in calls),
                  "content parts": isinstance(content, list),
                  "decomposed accent": "e\u0301" in json.dumps(message, ensure_ascii=False)}  # fmt: skip
        found.update(feature for feature, held in checks.items() if held)
        if message["role"] == "assistant" and not calls:
            found |= {"reasoning field"} if message.get("reasoning_content") else set()
            if isinstance(content, str) and content.startswith("<think>"):
                found.add("empty think block" if content.startswith("<think>\n\n</think>") else "inline reasoning")
    return found


FEATURES = {"tool chain before a later question", "parallel calls", "JSON-string arguments", "content parts",
            "decomposed accent", "reasoning field", "inline reasoning", "empty think block", "thinking off"}
