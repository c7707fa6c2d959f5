"""The key reference behind ``qwen35-tune schema``: every recipe and data-card key with its type, default, bounds,
choices and description, read from the pydantic models themselves, so what users read is what validate enforces.

Imports no torch (like validate). Keys of a list's items are written ``data.cards[].weight``; a data card's keys
``card.source.hub``. Rendering to text, Markdown or JSON is in reference_render.py.
"""

from __future__ import annotations

import ast
import difflib
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

import annotated_types
from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo

from qwen35_tune.cards.schema import DataCard
from qwen35_tune.errors import UserError
from qwen35_tune.recipe.schema import ALIASES, Recipe, extra_key_refused
from qwen35_tune.recipe.trainer_options import TrainerArg, library_arguments, sft_argument_docs, sft_arguments

CARD = "card"
EXTRA = "train.extra"
# Sections whose keys are a library's own arguments under the same names: (what to call it, module, class).
LIBRARY_SECTIONS = {
    "train": ("TRL SFTConfig", "trl.trainer.sft_config", "SFTConfig"),
    "method.lora": ("peft LoraConfig", "peft.tuners.lora.config", "LoraConfig"),
    "method.quantization": ("BitsAndBytesConfig", "transformers.utils.quantization_config", "BitsAndBytesConfig"),
}
_BOUNDS = ((annotated_types.Gt, "gt", ">"), (annotated_types.Ge, "ge", ">="), (annotated_types.Lt, "lt", "<"),
           (annotated_types.Le, "le", "<="), (annotated_types.MinLen, "min_length", "min length"),
           (annotated_types.MaxLen, "max_length", "max length"))  # fmt: skip


@dataclass(frozen=True)
class KeyDoc:
    """One key as the schema (or, under train.extra, the installed TRL) defines it."""

    key: str
    parent: str  # the section it sits in ("" for a recipe's top level, "card" for a data card's)
    type: str  # as a user writes it: "int", "str | null", "list of str", "section"
    required: bool
    default: Any  # the default value (None for required keys and sections with defaults of their own)
    description: str
    bounds: tuple[tuple[str, Any], ...] = ()  # (">", 0), ("<=", 1), ("min length", 1)
    choices: tuple[Any, ...] = ()  # a Literal's values, or the installed library's allowed strings
    section: bool = False
    about: str = ""  # a section's own docstring
    variant: str = ""  # the form of a union section these keys belong to ("local" or "hub" source)
    aliases: tuple[str, ...] = ()  # other spellings validate accepts (chat.thinking)
    library: str = ""  # "TRL SFTConfig argument", "qwen35-tune's own key", or for a section what its keys are


def key_docs() -> list[KeyDoc]:
    """Every recipe key, then every data-card key; each section before its keys."""
    card = KeyDoc(CARD, "", "data card file", True, None, "A data card: one YAML file per dataset, named in a "
                  "recipe's data.cards[].path.", section=True, about=docstring(DataCard))  # fmt: skip
    return [*_model_keys(Recipe, ""), card, *_model_keys(DataCard, CARD)]


def _model_keys(model: type[BaseModel], parent: str, variant: str = "") -> Iterator[KeyDoc]:
    """KeyDocs of a model's fields, depth first."""
    library = LIBRARY_SECTIONS.get(parent)
    names = library_arguments(*library[1:]) if library else None
    for name, info in model.model_fields.items():
        key = f"{parent}.{name}" if parent else name
        nested, many = _nested(info.annotation)
        yield _key_doc(key, parent, info, nested, variant, _library_note(key, name, library, names))
        for tag, sub in nested:
            yield from _model_keys(sub, key + ("[]" if many else ""), tag if len(nested) > 1 else "")


def _library_note(key: str, name: str, library: tuple[str, str, str] | None, names: frozenset[str] | None) -> str:
    if key in LIBRARY_SECTIONS:
        return f"keys not marked as qwen35-tune's own are {LIBRARY_SECTIONS[key][0]} arguments of the same name"
    if library is None or names is None:
        return ""
    return f"{library[0]} argument" if name in names else f"qwen35-tune's own key, not a {library[0]} argument"


def _key_doc(key: str, parent: str, info: FieldInfo, nested: list, variant: str, library: str) -> KeyDoc:
    default = None
    if not info.is_required():
        default = info.get_default(call_default_factory=True)
        default = None if isinstance(default, BaseModel) else default
    about = " ".join(f"{tag + ': ' if tag else ''}{docstring(sub)}" for tag, sub in nested)
    return KeyDoc(key, parent, type_text(info.annotation), info.is_required(), default, info.description or "",
                  bounds=_bounds(info), choices=_choices(info.annotation), section=bool(nested), about=about,
                  variant=variant, aliases=_aliases(key, info), library=library)  # fmt: skip


def _aliases(key: str, info: FieldInfo) -> tuple[str, ...]:
    """Other names validate accepts for a key (``validation_alias=AliasChoices(...)``), as dotted keys."""
    alias = info.validation_alias
    names = alias.choices if isinstance(alias, AliasChoices) else []
    head = key.rsplit(".", 1)[0] + "." if "." in key else ""
    return tuple(head + name for name in names if isinstance(name, str) and head + name != key)


def docstring(model: type[BaseModel]) -> str:
    """The first paragraph of a model's docstring, on one line."""
    return " ".join((model.__doc__ or "").split("\n\n")[0].replace("``", "").split())


def _bounds(info: FieldInfo) -> tuple[tuple[str, Any], ...]:
    found = []
    for item in info.metadata:
        for kind, attr, op in _BOUNDS:
            if isinstance(item, kind):
                found.append((op, getattr(item, attr)))
    return tuple(found)


def _members(annotation: Any) -> tuple[Any, ...]:
    """The members of a union (``X | None``, ``Union[...]``), else (annotation,); Annotated wrappers kept."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _strip(annotation: Any) -> Any:
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _nested(annotation: Any) -> tuple[list[tuple[str, type[BaseModel]]], bool]:
    """The models a field holds ((tag, model) each; the tag names one form of a union) and whether in a list."""
    models, many = [], False
    for member in _members(annotation):
        if typing.get_origin(member) is list:
            member, many = typing.get_args(member)[0], True
        tag = next((getattr(m, "tag", "") for m in getattr(member, "__metadata__", ()) if hasattr(m, "tag")), "")
        if _is_model(_strip(member)):
            models.append((tag, _strip(member)))
    return models, many


def _choices(annotation: Any) -> tuple[Any, ...]:
    for member in _members(annotation):
        while typing.get_origin(member) is list:
            member = typing.get_args(member)[0]
        if typing.get_origin(member) is Literal:
            return typing.get_args(member)
    return ()


def type_text(annotation: Any) -> str:
    """A field's type as a recipe writer reads it: 'int', 'str | null', "list of ('a' | 'b')", 'section'."""
    annotation = _strip(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        models = [m for m in args if _is_model(_strip(m))]
        parts = ["section"] if models else []
        parts += [type_text(a) for a in args if not _is_model(_strip(a)) and a is not type(None)]
        return " | ".join(parts + (["null"] if type(None) in args else []))
    if origin is Literal:
        return " | ".join(value_text(a) for a in args)
    if origin is list:
        inner = type_text(args[0])
        return "list of " + ("sections" if inner == "section" else _grouped(inner))
    if origin is dict:
        return "mapping" if args[1] is Any else f"mapping of {type_text(args[0])} to {_grouped(type_text(args[1]))}"
    if _is_model(annotation):
        return "section"
    if annotation is Any:
        return "any"
    return "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def _grouped(text: str) -> str:
    return f"({text})" if " | " in text else text


def value_text(value: Any) -> str:
    """A value as YAML writes it: null, true, 'text', [a, b], {k: v}."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {value_text(v)}" for k, v in value.items()) + "}"
    return repr(value)


def extra_docs() -> list[KeyDoc]:
    """The SFTConfig arguments train.extra accepts, as the installed TRL / transformers define them."""
    arguments, docs = sft_arguments() or {}, sft_argument_docs()
    out = []
    for name, spec in arguments.items():
        if extra_key_refused(name) is None:
            doc = docs.get(name)
            out.append(KeyDoc(f"{EXTRA}.{name}", EXTRA, _trainer_type(spec), False, _literal(doc and doc.default),
                              (doc.help if doc else "") or "(no help text in the library)", choices=spec.choices,
                              library="TRL SFTConfig argument"))  # fmt: skip
    return out


def _trainer_type(spec: TrainerArg) -> str:
    if spec.types is None:
        return "any"
    order = ("bool", "int", "float", "str", "list", "tuple", "dict")
    parts = [{"dict": "mapping", "tuple": "list"}.get(t, t) for t in order if t in spec.types]
    return " | ".join(dict.fromkeys(parts + (["null"] if "None" in spec.types else [])))


def _literal(source: str | None) -> Any:
    """A default written in the library's source as a Python literal, else its source text."""
    if source is None:
        return None
    if source in ("list()", "dict()"):  # default_factory=list / dict
        return [] if source == "list()" else {}
    try:
        return ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return source


def _plain(key: str) -> str:
    """A key as users may type it: list indexes (data.cards.0.weight, cards[2]) and [] markers dropped."""
    key = re.sub(r"\[\d*\]", "", key.strip().strip("."))
    return re.sub(r"\.\d+(?=\.|$)", "", key)


def select(query: str | None) -> tuple[list[KeyDoc], KeyDoc | None]:
    """The docs `qwen35-tune schema QUERY` shows, and the one key asked about when QUERY names a key (not a section).

    QUERY: nothing (everything), 'recipe', 'card', a section ('train', 'method.lora', 'data.cards'), a key
    ('train.learning_rate', 'data.cards.0.weight'), 'train.extra' (with every SFTConfig argument it accepts) or
    'train.extra.NAME'. An unknown one is a UserError with a did-you-mean.
    """
    docs = key_docs()
    plain = _plain(query or "")
    if plain in ("", "all"):
        return docs, None
    if plain == "recipe":
        return [d for d in docs if d.key != CARD and not d.key.startswith(CARD + ".")], None
    if plain.startswith(EXTRA + "."):
        extra = {d.key: d for d in extra_docs()}
        if plain in extra:
            return [extra[plain]], extra[plain]
        raise UserError(_unknown_extra(plain[len(EXTRA) + 1 :], [k[len(EXTRA) + 1 :] for k in extra]))
    by_plain = {_plain(name): d for d in docs for name in (d.key, *d.aliases)}
    found = by_plain.get(plain)
    if found is None:
        raise UserError(_unknown(query, plain, list(by_plain)))
    below = [d for d in docs if _plain(d.key).startswith(plain + ".")]
    if plain == EXTRA:
        return [found, *extra_docs()], found
    if found.section:
        return [found, *below], None
    found = _with_library_choices(found)
    return [found], found


def _unknown_extra(name: str, accepted: list[str]) -> str:
    """Why NAME is not a train.extra argument: it has a typed place, or it is no SFTConfig argument (did you mean)."""
    refused = extra_key_refused(name) if name in (sft_arguments() or {}) else None
    if refused:
        return f"{EXTRA}.{name}: {refused}"
    guesses = difflib.get_close_matches(name, accepted, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(g) for g in guesses)}?)" if guesses else ""
    return f"'{name}' is not an SFTConfig argument{hint}; `qwen35-tune schema {EXTRA}` lists the ones {EXTRA} accepts"


def _with_library_choices(doc: KeyDoc) -> KeyDoc:
    """A train key checked against the installed library's own enum (optim, lr_scheduler_type) gets its values."""
    spec = (sft_arguments() or {}).get(doc.key.split(".")[-1]) if doc.parent == "train" else None
    return replace(doc, choices=spec.choices) if spec and spec.choices and not doc.choices else doc


def _unknown(query: str | None, plain: str, known: list[str]) -> str:
    """Unknown key, with the keys it most likely means: same last name (or its alias), else closest spelling."""
    *head, leaf = plain.split(".")
    leaf = ALIASES.get(leaf, leaf)
    same = [k for k in known if k.split(".")[-1] == leaf]
    guesses = same or difflib.get_close_matches(".".join([*head, leaf]), known, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(g) for g in guesses[:3])}?)" if guesses else ""
    sections = ", ".join(d.key for d in key_docs() if d.section and "." not in d.key)
    return (f"unknown recipe or data-card key '{query}'{hint}; give a section ({sections}), a dotted key such as "
            "train.learning_rate, or nothing for every key")  # fmt: skip
