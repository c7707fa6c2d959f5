"""``qwen35-tune schema`` output: the key reference (reference.py) as plain text for an 80-column terminal, as
Markdown (docs/recipe-keys.md is this output) or as JSON for tools."""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import asdict

from qwen35_tune.recipe.reference import CARD, EXTRA, KeyDoc, docstring, value_text
from qwen35_tune.recipe.schema import Recipe

WIDTH = 80
INDENT = "    "
HEAD = ("Recipe and data-card keys, from the schema validate checks against. One part: `qwen35-tune schema "
        "SECTION` (train, method.lora, card.source, ...) or `qwen35-tune schema KEY` (train.learning_rate).")


def render(docs: list[KeyDoc], focus: KeyDoc | None, fmt: str = "text", head: bool = False) -> str:
    """The docs select() chose, in one format; `focus` is the key asked about (detail view), if any; `head` puts
    a line on how to narrow it down first (for the whole listing)."""
    if fmt == "json":
        return json.dumps([asdict(d) for d in docs], indent=2, default=str) + "\n"
    if fmt == "markdown":
        return render_markdown(docs)
    if focus is None:
        return ("\n".join(_wrap(HEAD, "", "")) + "\n\n" if head else "") + render_listing(docs)
    detail = render_detail(focus)
    if focus.key == EXTRA:
        detail += "\n" + _extra_listing([d for d in docs if d is not focus])
    return detail


def _wrap(text: str, first: str = INDENT, rest: str = INDENT) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False,
                         break_long_words=False) or [first]


def _bound(op: str, value: object, type_: str) -> str:
    if op in ("min length", "max length"):
        unit = "item" if type_.startswith("list") else "character"
        return f"{'at least' if op == 'min length' else 'at most'} {value} {unit}{'s' if value != 1 else ''}"
    return f"{op} {value!r}"


def default_text(doc: KeyDoc) -> str:
    """'required', 'optional' (a section whose keys all have defaults) or the default as YAML writes it."""
    if doc.required:
        return "required"
    if doc.section and doc.default is None and "null" not in doc.type:
        return "optional"
    return value_text(doc.default)


def _facts(doc: KeyDoc) -> list[str]:
    """Type, default and bounds, as one list of short phrases."""
    default = default_text(doc)
    return [doc.type, default if default in ("required", "optional") else f"default {default}",
            *(_bound(op, value, doc.type) for op, value in doc.bounds)]  # fmt: skip


def _notes(doc: KeyDoc) -> str:
    """What a listing says besides the description: the source form, other spellings, library ownership."""
    notes = [f"({doc.variant} source only)"] if doc.variant else []
    spellings = [a for a in doc.aliases if a not in doc.description]
    notes += [f"Also spelled {', '.join(spellings)}."] if spellings else []
    if doc.section and doc.about and doc.about != doc.description:
        notes.append(doc.about)
    if "own key" in doc.library:
        notes.append(f"[{doc.library}]")
    elif doc.library and doc.section:
        notes.append(doc.library[0].upper() + doc.library[1:] + ".")
    return " ".join(notes)


def render_listing(docs: list[KeyDoc]) -> str:
    """Each key: its path with type, default and bounds, then its description, indented; a blank line before each
    section."""
    lines: list[str] = []
    for doc in docs:
        if doc.section or doc.key == CARD:
            lines.append("")
        lines += _wrap(f"{doc.key}  " + ", ".join(_facts(doc)), "", INDENT + "  ")
        lines += _wrap(" ".join(filter(None, [doc.description, _notes(doc)])))
    return "\n".join(lines).strip("\n") + "\n"


def render_detail(doc: KeyDoc) -> str:
    """One key in full: description, then type, default, bounds, choices, spellings and where it belongs."""
    lines = [doc.key, *_wrap(doc.description), ""]
    rows = [("type", doc.type), ("default", default_text(doc)),
            ("bounds", ", ".join(_bound(op, v, doc.type) for op, v in doc.bounds)),
            ("choices", ", ".join(value_text(c) for c in doc.choices) if "'" not in doc.type else ""),
            ("form", f"{doc.variant} source" if doc.variant else ""), ("also", ", ".join(doc.aliases)),
            ("library", doc.library),
            ("section", doc.parent or ("data card" if doc.key == CARD else "top level"))]  # fmt: skip
    for label, value in rows:
        if value:
            lines += _wrap(value, f"{INDENT}{label + ':':<10}", INDENT + " " * 10)
    return "\n".join(lines) + "\n"


def _extra_listing(docs: list[KeyDoc]) -> str:
    """The SFTConfig arguments train.extra accepts: name, type and default, one a line (choices below when any)."""
    lines = [*_wrap(f"The {len(docs)} SFTConfig arguments train.extra accepts with the installed trl and "
                    "transformers (keys with a typed place in the recipe are refused there); `qwen35-tune schema "
                    f"{EXTRA}.NAME` shows one with the library's help text:", "", ""), ""]  # fmt: skip
    for doc in docs:
        name = doc.key[len(EXTRA) + 1 :]
        lines += _wrap(f"{name}  {doc.type}, default {value_text(doc.default)}", "  ", INDENT + "  ")
        if doc.choices:
            lines += _wrap("one of " + ", ".join(doc.choices), INDENT + "  ", INDENT + "  ")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell (and outside one): pipes escaped, <think> shown rather than read as HTML."""
    return re.sub(r"<(?=[A-Za-z/!])", "&lt;", text).replace("|", "\\|")


def render_markdown(docs: list[KeyDoc]) -> str:
    """A heading per section with its description, then a table of the keys directly in it."""
    children: dict[str, list[KeyDoc]] = {}
    for doc in docs:
        children.setdefault(doc.parent, []).append(doc)
    out = ["# Recipe and data-card keys", "",
           "Generated from the schema by `qwen35-tune schema --format markdown > docs/recipe-keys.md` (a test keeps "
           "this file up to date). In a terminal, `qwen35-tune schema KEY` shows one key or section; `qwen35-tune "
           f"schema {EXTRA}` lists the SFTConfig arguments `{EXTRA}` accepts with the installed TRL.", ""]  # fmt: skip
    heads = [("", "Top level", docstring(Recipe))]
    heads += [(d.key, f"`{d.key}`", " ".join(filter(None, [d.description, _notes(d)]))) for d in docs if d.section]
    for key, title, text in heads:
        rows = [d for d in children.get(key, []) + children.get(key + "[]", []) if d.key != CARD]
        if key in ("", CARD):
            out += ["## Recipe" if key == "" else "## Data cards", ""]
        if not rows:
            continue
        out += [f"### {title}", "", _cell(text), "", "| Key | Type | Default | Bounds | Description |",
                "|---|---|---|---|---|"]
        for doc in rows:
            description = " ".join(filter(None, [doc.description, _notes(doc) if not doc.section else ""]))
            bounds = ", ".join(_bound(op, v, doc.type) for op, v in doc.bounds)
            out.append(f"| `{doc.key}` | {_cell(doc.type)} | {_cell(default_text(doc))} | {_cell(bounds)} | "
                       f"{_cell(description)} |")
        out.append("")
    return "\n".join(out)
