"""`qwen35-tune generate`: a reply for every row of a jsonl file, generated in left-padded batches.

Rows are ``{"prompt": "..."}`` or ``{"messages": [...]}`` (the conversation so far, ending with the user), with an
optional ``enable_thinking`` per row. Output rows are the input rows plus ``output`` (the final answer), ``reasoning``
(the ``<think>`` part, split out), ``thinking``, ``finish_reason`` (``stop`` or ``length``) and token counts. A bad
row is reported with its line number and skipped; it never stops the file. Generation is eval.generate's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from qwen35_tune.data.messages import ROLES
from qwen35_tune.errors import UserError

log = logging.getLogger(__name__)

ADDED = ("output", "reasoning", "thinking", "finish_reason", "prompt_tokens", "new_tokens")


@dataclass(frozen=True)
class PromptRow:
    """One usable input row: where it was, the row as given, its conversation and its thinking switch."""

    line: int
    raw: dict
    messages: list[dict]
    thinking: bool | None


def _content_problem(content) -> str | None:
    if isinstance(content, str):
        return None
    if isinstance(content, list) and all(isinstance(p, dict) and set(p) <= {"type", "text"} and "text" in p
                                         for p in content):
        return None
    return "content must be a string or a list of text parts (generate is text only: no images or videos)"


def row_problem(raw) -> str | None:
    """Why ``raw`` cannot be generated for, or None."""
    if not isinstance(raw, dict):
        return f"a row must be a JSON object, not {type(raw).__name__}"
    if ("prompt" in raw) == ("messages" in raw):
        return "give exactly one of 'prompt' (a string) or 'messages' (a list of {role, content})"
    if "enable_thinking" in raw and not isinstance(raw["enable_thinking"], bool):
        return f"enable_thinking must be true or false, not {raw['enable_thinking']!r}"
    if "prompt" in raw:
        ok = isinstance(raw["prompt"], str) and raw["prompt"].strip()
        return None if ok else "prompt must be a non-empty string"
    messages = raw["messages"]
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return f"messages[{i}] needs a role, one of {', '.join(ROLES)}"
        problem = _content_problem(message.get("content", ""))
        if problem:
            return f"messages[{i}]: {problem}"
    if messages[-1]["role"] not in ("user", "tool"):
        return "the last message must be the user's (or a tool result): the reply is generated after it"
    return None


def read_prompt_rows(path: Path) -> tuple[list[PromptRow], list[str]]:
    """(usable rows, 'FILE:LINE: why' for every bad one) of a jsonl file; blank lines are skipped."""
    rows, problems = [], []
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise UserError(f"cannot read the prompts file {path}: {exc.strerror or exc}") from None
    for number, data in enumerate(lines, start=1):
        if not data.strip():
            continue
        try:
            raw = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            problems.append(f"{path}:{number}: not UTF-8 text")
            continue
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        problem = row_problem(raw)
        if problem:
            problems.append(f"{path}:{number}: {problem}")
            continue
        messages = raw["messages"] if "messages" in raw else [{"role": "user", "content": raw["prompt"]}]
        rows.append(PromptRow(number, raw, messages, raw.get("enable_thinking")))
    return rows, problems


def render_rows(tokenizer, rows: list[PromptRow], thinking: bool | None, path: Path) -> tuple[list, list[str]]:
    """([(row, prompt)], problems): each row through the chat template with its own thinking switch (else
    ``thinking``, else the template's default); rows the template refuses are reported with their line."""
    rendered, problems = [], []
    for row in rows:
        mode = row.thinking if row.thinking is not None else thinking
        kwargs = {} if mode is None else {"enable_thinking": mode}
        try:
            rendered.append((row, tokenizer.apply_chat_template(row.messages, tokenize=False,
                                                                add_generation_prompt=True, **kwargs)))
        except Exception as exc:  # the template's raise_exception (jinja TemplateError) and bad structures
            problems.append(f"{path}:{row.line}: the chat template refused it: {exc}")
    return rendered, problems


def output_row(row: PromptRow, prompt: str, generation, prompt_tokens: int) -> dict:
    """The input row plus what was generated; an input column named like an added one is kept as input_<name>."""
    from qwen35_tune.eval.generate import opens_think

    out = {(f"input_{k}" if k in ADDED else k): v for k, v in row.raw.items()}
    out.update(output=generation.answer, reasoning=generation.reasoning, thinking=opens_think(prompt),
               finish_reason="length" if generation.truncated else "stop", prompt_tokens=prompt_tokens,
               new_tokens=generation.new_tokens)
    return out


def generate_file(model, tokenizer, rendered: list, out: Path, *, max_new_tokens: int, batch_size: int,
                  temperature: float | None) -> dict:
    """Generate for every (row, prompt) in batches, writing each batch's rows to ``out`` as it finishes."""
    from qwen35_tune.eval.generate import generate_batch

    counts = {"rows": 0, "length": 0, "new_tokens": 0}
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for start in range(0, len(rendered), batch_size):
            chunk = rendered[start : start + batch_size]
            prompts = [prompt for _, prompt in chunk]
            generations = generate_batch(model, tokenizer, prompts, max_new_tokens, batch_size, temperature)
            for (row, prompt), generation in zip(chunk, generations, strict=True):
                tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
                fh.write(json.dumps(output_row(row, prompt, generation, tokens), ensure_ascii=False) + "\n")
                counts["length"] += generation.truncated
                counts["new_tokens"] += generation.new_tokens
            fh.flush()
            counts["rows"] += len(chunk)
            log.info("generated %d/%d rows", counts["rows"], len(rendered))
    return counts


def default_out(prompts: Path) -> Path:
    """``prompts.jsonl`` -> ``prompts.generated.jsonl`` next to it."""
    return prompts.with_name(prompts.name.removesuffix(".jsonl") + ".generated.jsonl")
