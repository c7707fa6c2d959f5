"""YAML read with line marks, so every problem in a recipe or data card can name its file:line."""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Tag

from qwen35_tune.errors import Problem, RecipeError
from qwen35_tune.yaml_build import (  # noqa: F401 - KeyPath, dotted and the limits are used from here too
    LIMIT_NOTE,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_KEYS,
    MAX_VALUES,
    BoundedComposer,
    KeyPath,
    TreeBuilder,
    YamlLimitError,
    dotted,
)


class StrictModel(BaseModel):
    """Base of every YAML-backed model: an unknown key is an error, and nothing changes after validation.

    Strict types, so `seed: true` or `r: "8"` is an error rather than 1 and 8, and only finite numbers, so
    `learning_rate: .inf` fails at validate instead of training a NaN adapter.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


# YAML 1.1 (PyYAML's default) reads `no`/`on` as booleans, `1e-4` as a string and `2024-01-01` as a date; recipes
# and cards use the YAML 1.2 core rules instead, so `languages: [no]` stays Norwegian and `lr: 1e-4` is a number.
_SCALARS = [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
        r"|[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$", "-+0123456789"),
]
_REPLACED = {tag for tag, _, _ in _SCALARS} | {"tag:yaml.org,2002:timestamp"}


def _use_core_scalars(cls: type) -> type:
    """Swap PyYAML's YAML 1.1 scalar rules for the YAML 1.2 core ones on a loader class."""
    cls.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in rules if tag not in _REPLACED]
        for first, rules in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    for tag, pattern, first in _SCALARS:
        cls.add_implicit_resolver(tag, re.compile(pattern), list(first))
    return cls


@_use_core_scalars
class CoreLoader(BoundedComposer, yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars (see _SCALARS) that stops composing past the limits (yaml_build.py)."""


class CoreDumper(yaml.SafeDumper):
    """SafeDumper that quotes any string that YAML 1.1 or 1.2 rules would read as something else ('no', '1e5'),
    so written files read back the same here and in any other YAML reader."""


for _tag, _pattern, _first in _SCALARS:
    CoreDumper.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


def parse_value(text: str) -> Any:
    """Parse one YAML scalar or flow value (an override's right-hand side) with the same rules and limits as files.

    Raises yaml.YAMLError whose text is the first problem (a syntax error, a limit, a duplicate key).
    """
    if len(text) > MAX_FILE_BYTES:
        raise yaml.YAMLError(f"longer than {MAX_FILE_BYTES:,} characters{LIMIT_NOTE}")
    data, _, problems = _parse(text, "<override>")
    if problems:
        raise yaml.YAMLError(problems[0].message)
    return data


def dump_yaml(data: Any) -> str:
    """Write data as block YAML in key order that CoreLoader reads back to equal data."""
    return yaml.dump(data, Dumper=CoreDumper, sort_keys=False, allow_unicode=True, default_flow_style=False)


def shown(path: Path | str) -> str:
    """A path as the user would write it: relative to the working directory when it lies inside it."""
    path = Path(path)
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Origin:
    """Where a value was set: file (as shown to the user), line, and the folder its relative paths mean."""

    file: str
    line: int | None
    base_dir: Path
    note: str = ""  # e.g. the override text, so a problem can quote what the user typed


Origins = dict[KeyPath, Origin]


@dataclass(frozen=True)
class YamlDoc:
    """A parsed YAML file: plain data plus the 1-based line of every key and list item."""

    path: Path
    data: Any
    lines: dict[KeyPath, int]

    def origins(self) -> Origins:
        """Every key path of this file mapped to an Origin in it."""
        file, base = shown(self.path), self.path.parent
        return {key: Origin(file, line, base) for key, line in self.lines.items()}


def locate(origins: Origins, path: KeyPath) -> Origin | None:
    """Origin of the deepest set key on path: a missing key reports its parent mapping's line."""
    for end in range(len(path), -1, -1):
        if path[:end] in origins:
            return origins[path[:end]]
    return None


def load_yaml(path: Path, what: str = "recipe") -> YamlDoc:
    """Read a YAML file into plain data with line marks; syntax errors and documents past the limits (size,
    nesting, aliases) become a RecipeError with file:line."""
    file = shown(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            why = f"the file is {size:,} bytes, more than {MAX_FILE_BYTES:,}{LIMIT_NOTE}: is it the right file?"
            raise RecipeError([Problem(file, None, "", why)], what)
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError([Problem(file, None, "", f"cannot read the file ({exc})")], what) from None
    data, lines, problems = _parse(text, file)
    if problems:
        raise RecipeError(problems, what)
    return YamlDoc(path, data, lines)


def _parse(text: str, file: str) -> tuple[Any, dict[KeyPath, int], list[Problem]]:
    """Compose, check the limits, and build one document: (data, line of every key path, problems)."""
    try:
        loader = CoreLoader(text)  # reads the text: a control character is refused here already
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return None, {}, [Problem(file, line, "", f"character #x{char:04x} is not allowed in YAML")]
    builder = TreeBuilder(loader, file)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {(): 1}, []
        builder.measure(node, 0)
        data = builder.build(node, ())
        builder.lines[()] = node.start_mark.line + 1
    except yaml.YAMLError as exc:
        return None, {}, [_syntax_problem(file, exc)]
    finally:
        loader.dispose()
    return data, builder.lines, builder.problems


def _syntax_problem(file: str, exc: yaml.YAMLError) -> Problem:
    """Turn a PyYAML error into a Problem at the line PyYAML blames (a limit's own words, without 'syntax')."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark else None
    if isinstance(exc, YamlLimitError):
        return Problem(file, line, "", str(exc.problem))
    words = " ".join(str(w) for w in (getattr(exc, "context", None), getattr(exc, "problem", None)) if w)
    return Problem(file, line, "", f"YAML syntax error: {words or exc}")


# ---- pydantic errors -> Problems at file:line ------------------------------------------------------------------

CHECK_ERROR = "recipe_check"  # PydanticCustomError type of our cross-field checks; ctx["at"] names the key below loc
_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "finite_number": "a finite number", "string_type": "a string",
    "list_type": "a list", "tuple_type": "a list",
    "dict_type": "a mapping of keys", "model_type": "a mapping of keys", "model_attributes_type": "a mapping of keys",
}  # fmt: skip
_BOUNDS = {"greater_than": "greater than", "greater_than_equal": "at least", "less_than": "less than",
           "less_than_equal": "at most", "too_short": "at least", "too_long": "at most"}  # fmt: skip


def problems_from(
    errors: list[Any], model: type[BaseModel], origins: Origins, aliases: dict[str, str] | None = None,
    skip_missing: bool = False,
) -> list[Problem]:  # fmt: skip
    """Map every pydantic error of `model` to a Problem with file:line, key path, plain words and what was found."""
    found = []
    for error in errors:
        if skip_missing and error["type"] == "missing":
            continue
        path, site, _ = _walk(model, error["loc"])
        at = (error.get("ctx") or {}).get("at")
        path = path + tuple(int(p) if p.isdigit() else p for p in at.split(".")) if at else path
        found.append((path, site, _words(error, model, aliases or {}), _got(error)))
    problems = []
    for path, message in _one_per_key(found):
        origin = locate(origins, path) or Origin("<recipe>", None, Path.cwd())
        note = f" in override '{origin.note}'" if origin.note else ""
        problems.append(Problem(origin.file, origin.line, dotted(path), message + note))
    return problems


def _words(error: Any, model: type[BaseModel], aliases: dict[str, str]) -> str:
    """What is wrong, in the user's words rather than pydantic's."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        return f"unknown key{_did_you_mean(key, _field_names(model, error['loc'][:-1]), aliases)}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}"
    if kind in ("string_too_long", "string_too_short"):
        bound = next(iter(ctx.values()), "")
        return (
            "must not be empty"
            if kind == "string_too_short" and bound == 1
            else (f"must be {_BOUNDS[kind.removeprefix('string_')]} {bound} characters")
        )
    if kind == "string_pattern_mismatch":
        return f"must match the pattern {ctx.get('pattern', '')}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        options = re.findall(r"'([^']*)'", expected)
        return f"expected one of {expected}{_literal_guess(error.get('input'), options)}"
    if kind in _BOUNDS:
        bound = next((v for k, v in ctx.items() if k in ("gt", "ge", "lt", "le", "min_length", "max_length")), "")
        if kind.startswith("too_"):
            return f"needs {_BOUNDS[kind]} {bound} item{'' if bound == 1 else 's'}"
        return f"must be {_BOUNDS[kind]} {bound}"
    msg = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return msg.replace("Input should be", "must be")


def _literal_guess(value: Any, options: list[str]) -> str:
    """` (did you mean 'steps'?)` for a near miss of one of a Literal's options (`step`, `LORA`, `bf16`)."""
    if not isinstance(value, str) or not options:
        return ""
    lowered = {option.lower(): option for option in options}
    guess = lowered.get(value.lower()) or next(iter(difflib.get_close_matches(value, options, n=1, cutoff=0.6)), None)
    return f" (did you mean '{guess}'?)" if guess else ""


def _got(error: Any) -> str:
    """` (got 'abc')`, shortened; nothing where the input says nothing (missing or unknown keys, our checks)."""
    if error["type"] in ("missing", "extra_forbidden", CHECK_ERROR):
        return ""
    text = repr(error.get("input"))
    return f" (got {text if len(text) <= 60 else text[:57] + '...'})"


def _did_you_mean(key: str, names: list[str], aliases: dict[str, str]) -> str:
    """` (did you mean 'r'?)` from a known rename (rank -> r), a close spelling, or a shared word (alpha)."""
    alias = aliases.get(key.lower())
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    shared = [n for n in names if len(key) >= 3 and len(n) >= 3 and (key in n or n in key)]
    guess = alias if alias in names else (close or shared or [None])[0]
    if guess:
        return f" (did you mean '{guess}'?)"
    return f" (known keys: {', '.join(names)})" if names else ""


def _field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """Allowed keys of the model that loc leads to from the root model."""
    target = _strip(_walk(model, loc)[2])
    return list(target.model_fields) if isinstance(target, type) and issubclass(target, BaseModel) else []


def _walk(model: type[BaseModel], loc: tuple) -> tuple[KeyPath, KeyPath | None, Any]:
    """Split pydantic's loc into the data key path, the first union passed on the way, and the type reached.

    After a union of several members pydantic puts the member's label ('int', 'list[str]', a Tag) into loc;
    those are not keys in the user's file, so they are dropped from the path.
    """
    tp: Any = model
    path: list[Any] = []
    site = None
    for part in loc:
        tp = _strip(tp)
        if _is_union(tp):
            site = tuple(path) if site is None else site
            tp = _member(typing.get_args(tp), str(part))
        else:
            path.append(part)
            tp = _child(tp, part)
    return tuple(path), site, tp


def _is_union(tp: Any) -> bool:
    """True for typing.Union[...] and X | Y."""
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _strip(tp: Any) -> Any:
    """Drop Annotated wrappers and a None member, which pydantic treats as plain nullable (no loc label)."""
    while True:
        args = typing.get_args(tp)
        if typing.get_origin(tp) is typing.Annotated:
            tp = args[0]
        elif _is_union(tp) and type(None) in args:
            rest = tuple(a for a in args if a is not type(None))
            tp = rest[0] if len(rest) == 1 else typing.Union[rest]  # noqa: UP007 - built from runtime values
        else:
            return tp


def _member(members: tuple, label: str) -> Any:
    """The union member that pydantic's loc label names: by Tag, class name, or type text ('list[str]')."""
    for member in members:
        meta = typing.get_args(member)[1:] if typing.get_origin(member) is typing.Annotated else ()
        inner = _strip(member)
        origin = typing.get_origin(inner)
        names = {getattr(inner, "__name__", None), origin.__name__ if origin else None}
        if any(isinstance(m, Tag) and m.tag == label for m in meta) or label.split("[")[0] in names:
            return member
    return None


def _child(tp: Any, part: Any) -> Any:
    """Type of tp[part] for models, lists and dicts; None where the type is unknown (Any, or an unmatched union)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field else None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, tuple, set) and isinstance(part, int) and args:
        return args[0]
    return args[1] if origin is dict and len(args) == 2 else None


def _one_per_key(found: list[tuple[KeyPath, KeyPath | None, str, str]]) -> list[tuple[KeyPath, str]]:
    """Collapse a failed union's branches: keep the member that got furthest, join 'expected X or Y' at one key."""
    deep_sites = {site for path, site, _, _ in found if site is not None and len(path) > len(site)}
    grouped: dict[KeyPath, list[tuple[str, str]]] = {}
    for path, site, words, got in found:
        if site in deep_sites and path == site and words.startswith("expected "):
            continue  # e.g. `target_modules: [1]` is not "expected a string": the list member got further
        grouped.setdefault(path, []).append((words, got))
    out = []
    for path, items in grouped.items():
        expected = list(dict.fromkeys(w.removeprefix("expected ") for w, _ in items if w.startswith("expected ")))
        if expected:
            got = next(g for w, g in items if w.startswith("expected "))
            out.append((path, f"expected {' or '.join(expected)}{got}"))
        out += [(path, w + g) for w, g in dict.fromkeys(i for i in items if not i[0].startswith("expected "))]
    return out
