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
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from qwen35_tune.errors import Problem, RecipeError

KeyPath = tuple[Any, ...]  # ("data", "cards", 0, "path"): str keys for mappings, int indexes for lists


class StrictModel(BaseModel):
    """Base of every YAML-backed model: an unknown key is an error, and nothing changes after validation.

    Strict types, so `seed: true` or `r: "8"` is an error rather than 1 and 8, and only finite numbers, so
    `learning_rate: .inf` fails at validate instead of training a NaN adapter.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


# A recipe or data card is a page of settings. These bounds are far above any real one and stop a hostile or
# mistaken file (an alias bomb, 20k-deep nesting, a data file passed as a card) in milliseconds with its line;
# each message says it is a limit for recipes and data cards.
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32  # nested mappings/lists, aliases expanded
MAX_VALUES = 100_000  # keys, items and scalars, aliases expanded
MAX_KEYS = 1_000  # in one mapping
_LIMIT = " (the limit for a recipe or data card)"


class YamlLimitError(yaml.MarkedYAMLError):
    """A document past one of the bounds above (not a syntax error: the message is shown as it is)."""

    def __init__(self, message: str, mark: Any):
        super().__init__(problem=message, problem_mark=mark)


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
class CoreLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars (see _SCALARS) that stops composing past MAX_DEPTH / MAX_VALUES and at
    an alias inside its own anchor (`&a [*a]`, a structure that contains itself)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth, self._nodes, self._open_anchors = 0, 0, set()

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        """PyYAML's compose_node (recursive, unbounded) with the limits checked before each step down."""
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            if event.anchor in self._open_anchors:
                raise YamlLimitError(f"alias *{event.anchor} is inside the anchor &{event.anchor} it refers to "
                                     "(a structure that contains itself)", event.start_mark)  # fmt: skip
            return super().compose_node(parent, index)
        self._depth += 1
        self._nodes += 1
        if self._depth > MAX_DEPTH:
            raise YamlLimitError(f"nested deeper than {MAX_DEPTH} levels{_LIMIT}", event.start_mark)
        if self._nodes > MAX_VALUES:
            raise YamlLimitError(f"more than {MAX_VALUES:,} values{_LIMIT}", event.start_mark)
        anchor = event.anchor
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open_anchors.discard(anchor)


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
        raise yaml.YAMLError(f"longer than {MAX_FILE_BYTES:,} characters{_LIMIT}")
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


def dotted(path: KeyPath) -> str:
    """Key path in the user's words: ("data", "cards", 0, "weight") -> data.cards[0].weight."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


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
            why = f"the file is {size:,} bytes, more than {MAX_FILE_BYTES:,}{_LIMIT}: is it the right file?"
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
    builder = _Builder(loader, file)
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


_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "binary", "timestamp")}
_COLLECTION_TAGS = {MappingNode: "tag:yaml.org,2002:map", SequenceNode: "tag:yaml.org,2002:seq"}
Pair = tuple[Node, Node, bool]  # key node, value node, written in this mapping (False: merged in by `<<`)


def _unsupported(node: Node) -> str:
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    return f"the tag {tag} is not supported in a recipe or data card"


class _Builder:
    """Walks composed YAML nodes into dicts/lists/scalars, noting each key's line and duplicate keys.

    A node that aliases reuse is one object in the composed graph; `measure` visits each once (memoised) to bound
    what the aliases expand to before `build` expands them, so an alias bomb costs a walk of its text, not of its
    expansion. Merge keys are expanded here too, once per mapping and deduplicated (PyYAML's flatten_mapping copies
    every merged pair again for each alias, which grows exponentially through chained merges).
    """

    def __init__(self, loader: CoreLoader, file: str):
        self.loader, self.file = loader, file
        self.lines: dict[KeyPath, int] = {}
        self.problems: list[Problem] = []
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, levels below) with aliases expanded
        self._pairs: dict[int, list[Pair]] = {}
        self._open: set[int] = set()

    def measure(self, node: Node, depth: int) -> tuple[int, int]:
        """(values, levels) node expands to; a YamlLimitError at the node that passes MAX_VALUES or MAX_DEPTH."""
        too_deep = f"nested deeper than {MAX_DEPTH} levels with aliases expanded{_LIMIT}"
        if depth > MAX_DEPTH:
            raise YamlLimitError(too_deep, node.start_mark)
        known = self._sizes.get(id(node))
        if known is None:
            if id(node) in self._open:  # the composer refuses this already; kept so build can never loop
                raise YamlLimitError("an alias refers to the structure it is in", node.start_mark)
            self._open.add(id(node))
            values, levels = 1, 0
            for child in self._children(node):
                child_values, child_levels = self.measure(child, depth + 1)
                values, levels = values + child_values, max(levels, child_levels + 1)
                if values > MAX_VALUES:
                    raise YamlLimitError(
                        f"expands to more than {MAX_VALUES:,} values through aliases{_LIMIT}", node.start_mark
                    )
            self._open.discard(id(node))
            known = self._sizes[id(node)] = (values, levels)
        if depth + known[1] > MAX_DEPTH:
            raise YamlLimitError(too_deep, node.start_mark)
        return known

    def _children(self, node: Node) -> list[Node]:
        if isinstance(node, MappingNode):
            return [n for key, value, _ in self.pairs(node) for n in (key, value)]
        return list(node.value) if isinstance(node, SequenceNode) else []

    def pairs(self, node: MappingNode, chain: int = 0) -> list[Pair]:
        """The mapping's pairs with `<<` merges applied as PyYAML does (own keys last, so they win; of several
        merged mappings the first listed wins), one pair per merged-in key."""
        known = self._pairs.get(id(node))
        if known is not None:
            return known
        if chain > MAX_DEPTH:
            raise YamlLimitError(f"merge keys (<<) chained more than {MAX_DEPTH} deep{_LIMIT}", node.start_mark)
        merged: dict[Any, Pair] = {}
        own: list[Pair] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                own.append((key_node, value_node, True))
                continue
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in reversed(sources):
                if not isinstance(source, MappingNode):
                    raise ConstructorError(
                        None, None, "a merge key (<<) takes a mapping or a list of mappings", source.start_mark
                    )
                for key, value, _ in self.pairs(source, chain + 1):
                    name = key.value if isinstance(key, ScalarNode) else id(key)
                    merged.pop(name, None)  # the later one wins; it also moves to the later position
                    merged[name] = (key, value, False)
        found = [*merged.values(), *own]
        if len({k.value if isinstance(k, ScalarNode) else id(k) for k, _, _ in found}) > MAX_KEYS:
            raise YamlLimitError(f"a mapping with more than {MAX_KEYS:,} keys{_LIMIT}", node.start_mark)
        self._pairs[id(node)] = found
        return found

    def build(self, node: Node, path: KeyPath) -> Any:
        """Plain Python value of node; scalars go through the loader's own constructors. Only the plain YAML tags:
        a mapping tagged `!!python/object` (or `!!set`) would otherwise be read as a plain mapping, silently."""
        if type(node) in _COLLECTION_TAGS and node.tag != _COLLECTION_TAGS[type(node)]:
            raise ConstructorError(None, None, _unsupported(node), node.start_mark)
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                items.append(self.build(item, (*path, index)))
            return items
        if not isinstance(node, ScalarNode) or node.tag not in _PLAIN_TAGS:
            raise ConstructorError(None, None, _unsupported(node), node.start_mark)
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, OverflowError) as exc:  # e.g. an integer of more than 4300 digits
            raise YamlLimitError(f"cannot read this value ({str(exc).split(';')[0]})", node.start_mark) from None

    def _mapping(self, node: MappingNode, path: KeyPath) -> dict[str, Any]:
        """Mapping with `<<` merge keys applied; a key written twice in one mapping is a problem, not a silent win."""
        out: dict[str, Any] = {}
        own_keys: set[str] = set()
        for key_node, value_node, own in self.pairs(node):
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                self.problems.append(Problem(self.file, line, dotted(path), "a key must be a plain name"))
                continue
            key = (*path, key_node.value)  # the key as written, so `on:` or `1:` stay strings
            if own:  # a merged-in key may be overridden; the same key written twice may not
                if key_node.value in own_keys:
                    self.problems.append(
                        Problem(self.file, line, dotted(key), f"duplicate key (also on line {self.lines[key]})")
                    )
                own_keys.add(key_node.value)
            self.lines[key] = line
            out[key_node.value] = self.build(value_node, key)
        return out


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
