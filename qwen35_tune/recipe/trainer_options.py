"""What TRL's SFTConfig accepts (argument names, value types, the choices of enum-like options), read from the
installed trl and transformers source files without importing them.

Importing either pulls in torch (seconds), and `validate` must stay instant; yet a misspelt `optim` or
`lr_scheduler_type`, or an unknown `train.extra` key, should fail at validate rather than when the trainer starts.
The dataclass fields and the string enums (SchedulerType, OptimizerNames, IntervalStrategy, ...) are read with `ast`
from the installed files, so the checks follow the installed versions. If the sources cannot be read (a layout
this code does not know), every check here passes and the trainer's own check at train time remains.
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Where the chain starts; its base classes and the enums they name are followed through the files' imports.
CONFIG_MODULE, CONFIG_CLASS = "trl.trainer.sft_config", "SFTConfig"
_SIMPLE = {"bool", "int", "float", "str", "dict", "list", "tuple", "Any", "None"}


@dataclass(frozen=True)
class TrainerArg:
    """One SFTConfig argument: the plain types its annotation allows (None: any) and its allowed strings (if any)."""

    types: frozenset[str] | None
    choices: tuple[str, ...] = ()


def _module_file(module: str, from_file: Path | None = None, level: int = 0) -> Path | None:
    """File of a module, found without importing it (or its package: find_spec is only asked for top levels)."""
    parts = module.split(".") if module else []
    if level:
        if from_file is None:
            return None
        base = from_file.parent
        for _ in range(level - 1):
            base = base.parent
    else:
        spec = importlib.util.find_spec(parts[0]) if parts else None
        if spec is None or not spec.submodule_search_locations:
            return None
        base, parts = Path(next(iter(spec.submodule_search_locations))), parts[1:]
    target = base.joinpath(*parts)
    for candidate in (target.with_suffix(".py"), target / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _find_class(name: str, path: Path, hops: int = 0) -> tuple[ast.ClassDef, Path] | None:
    """The class `name` as defined in path, or in the module path imports it from (lazy `__init__`s included)."""
    if hops > 8:
        return None
    tree = _tree(path)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node, path
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            source = _module_file(node.module or "", path, node.level)
            original = next(a.name for a in node.names if (a.asname or a.name) == name)
            if source is not None and source != path:
                return _find_class(original, source, hops + 1)
    return None


def _enum_values(cls: ast.ClassDef) -> tuple[str, ...] | None:
    """The string values of an Enum subclass body (`NAME = "value"`), or None if cls is not such an enum."""
    bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in cls.bases}
    if not bases & {"Enum", "ExplicitEnum", "StrEnum"}:
        return None
    values = [
        node.value.value
        for node in cls.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    ]
    return tuple(values) or None


def _members(annotation: ast.expr) -> list[ast.expr]:
    """The members of a union annotation (`A | B`, `Optional[A]`, `Union[A, B]`), else [annotation]."""
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        return _members(annotation.left) + _members(annotation.right)
    if isinstance(annotation, ast.Subscript) and isinstance(annotation.value, ast.Name):
        inner = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
        if annotation.value.id == "Optional":
            return [*_members(inner[0]), ast.Constant(None)]
        if annotation.value.id == "Union":
            return [m for part in inner for m in _members(part)]
    return [annotation]


def _argument(annotation: ast.expr, value: ast.expr | None, path: Path) -> TrainerArg:
    """A TrainerArg from a field's annotation (and `field(metadata={"choices": [...]})` when given)."""
    types: set[str] = set()
    choices: tuple[str, ...] = ()
    for member in _members(annotation):
        if isinstance(member, ast.Constant) and member.value is None:
            types.add("None")
        elif isinstance(member, ast.Subscript) and isinstance(member.value, ast.Name):
            if member.value.id not in _SIMPLE:
                return TrainerArg(None)  # Literal[...], a generic class: leave it to the trainer
            types.add(member.value.id)
        elif isinstance(member, ast.Name) and member.id in _SIMPLE:
            types.add(member.id)
        elif isinstance(member, ast.Name) and (found := _find_class(member.id, path)) is not None:
            enum = _enum_values(found[0])
            if enum is None:
                return TrainerArg(None)  # a config class (e.g. ParallelismConfig): anything goes here
            types.add("str")
            choices = enum
        else:
            return TrainerArg(None)
    if "Any" in types:
        return TrainerArg(None)
    return TrainerArg(frozenset(types), choices or _metadata_choices(value))


def _metadata_choices(value: ast.expr | None) -> tuple[str, ...]:
    """`field(..., metadata={"choices": ["a", "b"]})` as a tuple; () where absent or not a literal list."""
    if not isinstance(value, ast.Call):
        return ()
    for keyword in value.keywords:
        if keyword.arg == "metadata" and isinstance(keyword.value, ast.Dict):
            for key, item in zip(keyword.value.keys, keyword.value.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "choices":
                    try:
                        found = ast.literal_eval(item)
                    except ValueError:
                        return ()
                    return tuple(found) if all(isinstance(c, str) for c in found) else ()
    return ()


def _class_chain(module: str, name: str) -> list[tuple[ast.ClassDef, Path]]:
    """The class `name` of `module` and its first bases, subclass first, as found in the installed sources."""
    path = _module_file(module)
    found = _find_class(name, path) if path else None
    chain = []
    while found is not None and len(chain) < 16:
        chain.append(found)
        cls, where = found
        base = next((b.id for b in cls.bases if isinstance(b, ast.Name)), None)
        found = _find_class(base, where) if base else None
    return chain


@functools.cache
def sft_arguments() -> dict[str, TrainerArg] | None:
    """Every SFTConfig argument (TrainingArguments' included) by name; None when the sources cannot be read."""
    return config_arguments(CONFIG_MODULE, CONFIG_CLASS)


@functools.cache
def config_arguments(module: str, name: str) -> dict[str, TrainerArg] | None:
    """Every argument of a TRL config class (``DPOConfig``, ``GRPOConfig``: TrainingArguments included);
    None when the sources cannot be read."""
    try:
        arguments: dict[str, TrainerArg] = {}
        for cls, where in reversed(_class_chain(module, name)):  # subclasses last: their field definitions win
            for node in cls.body:
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    if not node.target.id.startswith("_"):
                        arguments[node.target.id] = _argument(node.annotation, node.value, where)
    except (OSError, SyntaxError, ValueError, ImportError):
        return None
    return arguments if "learning_rate" in arguments and "optim" in arguments else None


def config_argument_problem(module: str, name: str, key: str, value: Any) -> str | None:
    """``argument_problem`` against another TRL config class: unknown name (did-you-mean), wrong type, non-finite
    number, unknown choice; None when fine or when the sources cannot be read."""
    arguments = config_arguments(module, name)
    if arguments is None:
        return _non_finite(value)
    spec = arguments.get(key)
    if spec is None:
        guess = _guess(key, list(arguments))
        return f"not a {name} argument" + (f" (did you mean '{guess}'?)" if guess else "")
    problem = _type_problem(spec, value) or _non_finite(value)
    if problem is None and spec.choices and isinstance(value, str) and value not in spec.choices:
        guess = _guess(value, spec.choices)
        hint = f"did you mean '{guess}'? " if guess else ""
        problem = f"unknown value '{value}' ({hint}the installed trl accepts: {', '.join(spec.choices)})"
    return problem


def compared_strings(module: str, function: str, attribute: str) -> tuple[str, ...] | None:
    """The string constants ``function`` (a method in ``module``'s source) compares ``attribute`` with
    (``loss_type == "sigmoid"``, ``self.f_divergence_type == "forward_kl"``), in source order: the choices a library
    accepts only by branching on them. None when the sources cannot be read."""
    path = _module_file(module)
    if path is None:
        return None
    try:
        tree = _tree(path)
    except (OSError, SyntaxError, ValueError):
        return None
    found: list[str] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.FunctionDef) and node.name == function):
            continue
        for compare in ast.walk(node):
            if not (isinstance(compare, ast.Compare) and len(compare.ops) == 1 and isinstance(compare.ops[0], ast.Eq)):
                continue
            left, right = compare.left, compare.comparators[0]
            named = (left.id if isinstance(left, ast.Name) else left.attr if isinstance(left, ast.Attribute) else "")
            if named == attribute and isinstance(right, ast.Constant) and isinstance(right.value, str):
                found.append(right.value)
    return tuple(dict.fromkeys(found)) or None


@functools.cache
def library_arguments(module: str, name: str) -> frozenset[str] | None:
    """Argument names of a library's config class (dataclass fields, or its ``__init__`` parameters), base classes
    included, read from the installed source without importing it; None when the sources cannot be read."""
    try:
        chain = _class_chain(module, name)
        names: set[str] = set()
        for cls, _ in chain:
            for node in cls.body:
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    names.add(node.target.id)
                elif isinstance(node, ast.FunctionDef) and node.name == "__init__":
                    names.update(a.arg for a in node.args.args[1:] + node.args.kwonlyargs)
    except (OSError, SyntaxError, ValueError, ImportError):
        return None
    return frozenset(n for n in names if not n.startswith("_")) or None


@dataclass(frozen=True)
class ArgumentDoc:
    """What the library itself says about one SFTConfig argument: its default (as written there) and help text."""

    default: str | None
    help: str


@functools.cache
def sft_argument_docs() -> dict[str, ArgumentDoc]:
    """Default and help text of every SFTConfig argument from the installed sources; empty when unreadable."""
    try:
        chain = _class_chain(CONFIG_MODULE, CONFIG_CLASS)
    except (OSError, SyntaxError, ValueError, ImportError):
        return {}
    docs: dict[str, ArgumentDoc] = {}
    for cls, _ in reversed(chain):  # subclasses last: their definitions win
        for node in cls.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                docs[node.target.id] = _field_doc(node.value)
    return docs


def _field_doc(value: ast.expr | None) -> ArgumentDoc:
    """ArgumentDoc of `= default` or `= field(default=..., metadata={"help": ...})`."""
    if not (isinstance(value, ast.Call) and getattr(value.func, "id", "") == "field"):
        return ArgumentDoc(None if value is None else ast.unparse(value), "")
    default, text = None, ""
    for keyword in value.keywords:
        if keyword.arg == "default":
            default = ast.unparse(keyword.value)
        elif keyword.arg == "default_factory":
            factory = keyword.value
            default = ast.unparse(factory.body) if isinstance(factory, ast.Lambda) else ast.unparse(factory) + "()"
        elif keyword.arg == "metadata" and isinstance(keyword.value, ast.Dict):
            for key, item in zip(keyword.value.keys, keyword.value.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "help" and isinstance(item, ast.Constant):
                    text = str(item.value)
    return ArgumentDoc(default, " ".join(text.split()))


def choice_problem(name: str, value: Any) -> str | None:
    """Why value is not one of the allowed strings of SFTConfig argument `name` (did-you-mean included), or None."""
    arguments = sft_arguments()
    spec = arguments.get(name) if arguments else None
    if spec is None or not spec.choices or not isinstance(value, str) or value in spec.choices:
        return None
    guess = _guess(value, spec.choices)
    hint = f"did you mean '{guess}'? " if guess else ""
    return f"unknown value '{value}' ({hint}the installed transformers/trl accept: {', '.join(spec.choices)})"


def _guess(value: str, names: tuple[str, ...] | list[str]) -> str | None:
    """The name value most likely meant: the first (in the library's order) that it begins (`adamw` ->
    `adamw_torch`), else the closest spelling."""
    starts = [n for n in names if n.startswith(value.lower())]
    close = difflib.get_close_matches(value, names, n=1, cutoff=0.6)
    return (starts or close or [None])[0]


def argument_problem(name: str, value: Any) -> str | None:
    """Why `name: value` is not a valid SFTConfig argument (unknown name, wrong type, non-finite number, unknown
    choice), or None when it is (or cannot be told without the library)."""
    arguments = sft_arguments()
    if arguments is None:
        return _non_finite(value)
    spec = arguments.get(name)
    if spec is None:
        guess = _guess(name, list(arguments))
        return "not an SFTConfig argument" + (f" (did you mean '{guess}'?)" if guess else "")
    return _type_problem(spec, value) or _non_finite(value) or choice_problem(name, value)


_NAMES = {
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "dict": "a mapping",
    "list": "a list",
    "tuple": "a list",
    "None": "null",
}  # fmt: skip  (in this order)


def _type_problem(spec: TrainerArg, value: Any) -> str | None:
    """`expected ...` when value's YAML type is not one the annotation allows (ints count as floats, bools do not
    count as numbers)."""
    if spec.types is None:
        return None
    kind = "None" if value is None else type(value).__name__
    if kind in spec.types or (kind == "int" and "float" in spec.types) or (kind == "list" and "tuple" in spec.types):
        return None
    wanted = " or ".join(dict.fromkeys(words for name, words in _NAMES.items() if name in spec.types))
    return f"expected {wanted} (got {value!r})"


def _non_finite(value: Any) -> str | None:
    """`must be a finite number` if value, or anything inside it, is inf or nan."""
    stack, seen = [value], 0
    while stack and seen < 100_000:  # values come through the YAML limits already; this only guards the walk
        item = stack.pop()
        seen += 1
        if isinstance(item, float) and not math.isfinite(item):
            return f"must be a finite number (got {item})"
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None
