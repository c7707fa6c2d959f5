"""Recipe file -> validated Recipe: follow `extends`, apply KEY=VALUE overrides, load data cards, validate.

Every value keeps the Origin (file, line) that set it last, so a problem anywhere in the chain names the right
file and line; all problems are collected and raised together as one RecipeError.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from qwen35_tune.cards.load import load_card
from qwen35_tune.cards.schema import DataCard
from qwen35_tune.errors import Problem, RecipeError
from qwen35_tune.recipe.model_ref import model_ref_problem
from qwen35_tune.recipe.schema import ALIASES, Recipe
from qwen35_tune.yaml_lines import (
    MAX_DEPTH,
    KeyPath,
    Origin,
    Origins,
    dotted,
    load_yaml,
    locate,
    parse_value,
    problems_from,
    shown,
)

OVERRIDE = "<override>"
# A domain recipe extends a model recipe, perhaps through a shared base: a few files. These bounds stop a runaway
# chain (or a lattice of extends lists re-reading the same parents) long before it costs time.
MAX_EXTENDS_DEPTH = 16
MAX_EXTENDS_READS = 64
MAX_OVERRIDES = 1_000


def load_recipe(path: str | Path, overrides: Iterable[str] = (), *, check_model: bool = False) -> Recipe:
    """Load, compose and validate a recipe and the data cards it names; raise every problem at once.

    overrides are dotted `KEY=VALUE` strings (`train.learning_rate=1e-4`, `data.cards.0.weight=2`); values are
    read as YAML and typed by the schema. Relative paths in overrides are relative to the working directory.
    check_model also checks that model.name_or_path can be loaded here (`validate` does; commands that never load
    the model, or read a finished run's recipe on another machine, do not).
    """
    root = _absolute(path)
    if not root.is_file():
        raise RecipeError([Problem(shown(root), None, "", "recipe file not found")])
    problems: list[Problem] = []
    data, origins, files = _compose(root, (root,), problems, [])
    chain_ok = not problems  # a broken file in the chain would make every key it sets look "missing"
    data = _apply_overrides(data, origins, overrides, problems)
    _resolve_paths(data, origins)
    cards = _load_cards(data, origins, problems)
    if check_model:
        problems += _model_problems(data, origins)
    try:
        recipe = Recipe.model_validate(data, context={"source_files": files, "cards": cards, "origins": origins})
    except ValidationError as err:
        errors = err.errors(include_url=False)
        problems += problems_from(errors, Recipe, origins, ALIASES, skip_missing=not chain_ok)
    if problems:
        raise RecipeError(_in_reading_order(problems, files))
    return recipe


def _in_reading_order(problems: list[Problem], files: list[Path]) -> list[Problem]:
    """Recipe files in chain order, then data cards, then overrides; by line within a file."""
    rank = {shown(f): i for i, f in enumerate(files)}
    last = len(rank) + 1

    def key(p: Problem) -> tuple[int, str, int]:
        return (last if p.file == OVERRIDE else rank.get(p.file or "", len(rank))), p.file or "", p.line or 0

    return sorted(problems, key=key)


def _absolute(path: str | Path) -> Path:
    """Absolute, normalised path (symlinks kept, so messages show the names the user wrote)."""
    return Path(os.path.abspath(Path(path).expanduser()))


# ---- extends ---------------------------------------------------------------------------------------------------


def _compose(
    path: Path, stack: tuple[Path, ...], problems: list[Problem], reads: list[Path]
) -> tuple[dict, Origins, list[Path]]:
    """One file merged over everything it extends: (data, origin of every key, files read depth first).

    reads collects every file read in this load (a parent extended twice is read twice), to bound the total.
    """
    reads.append(path)
    try:
        doc = load_yaml(path)
    except RecipeError as err:
        problems.extend(err.problems)
        return {}, {}, [path]
    own = doc.origins()
    data = {} if doc.data is None else doc.data
    if not isinstance(data, dict):
        problems.append(Problem(shown(path), own[()].line, "", "a recipe must be a mapping of keys"))
        return {}, {}, [path]
    merged: dict = {}
    origins: Origins = {}
    files = [path]
    for parent, where in _parents(data.pop("extends", None), path, own, problems):
        chain = " -> ".join(shown(p) for p in (*stack, parent))
        if parent in stack:
            problems.append(Problem(where.file, where.line, "extends", f"extends cycle: {chain}"))
        elif not parent.is_file():
            problems.append(Problem(where.file, where.line, "extends", f"extended file not found: {shown(parent)}"))
        elif len(stack) >= MAX_EXTENDS_DEPTH:  # stop at once: the rest of a runaway chain says nothing new
            raise RecipeError([Problem(where.file, where.line, "extends",
                                       f"extends chain longer than {MAX_EXTENDS_DEPTH} files: {chain}")])  # fmt: skip
        elif len(reads) >= MAX_EXTENDS_READS:
            raise RecipeError([Problem(where.file, where.line, "extends", f"more than {MAX_EXTENDS_READS} recipe "
                                       "files read through extends (a file that several parents extend is read "
                                       "once for each)")])  # fmt: skip
        else:
            parent_data, parent_origins, parent_files = _compose(parent, (*stack, parent), problems, reads)
            merged = deep_merge(merged, parent_data, origins, parent_origins)
            files += [f for f in parent_files if f not in files]
    merged = deep_merge(merged, data, origins, own)
    origins[()] = own[()]
    return merged, origins, files


def _parents(extends: Any, path: Path, own: Origins, problems: list[Problem]) -> Iterator[tuple[Path, Origin]]:
    """The files named by `extends:` (one or a list), resolved against the extending file's folder."""
    if extends is None:
        return
    items = [extends] if isinstance(extends, str) else extends
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        where = own[("extends",)]
        problems.append(Problem(where.file, where.line, "extends", "expected a file path or a list of them"))
        return
    for index, item in enumerate(items):
        where = own.get(("extends", index), own[("extends",)])
        yield _absolute(path.parent / Path(item).expanduser()), where


def deep_merge(base: dict, top: dict, origins: Origins, top_origins: Origins) -> dict:
    """top over base: mappings merge key by key, anything else (lists too) replaces; origins follow the winner.

    origins (base's) is updated in place. Linear in the keys: the replaced subtrees are collected first and their
    origins dropped in one pass (dropping them key by key was quadratic: 10k keys took minutes).
    """
    replaced: set[KeyPath] = set()
    merged = _merge(base, top, (), replaced)
    if replaced:
        for path in [p for p in origins if any(p[:end] in replaced for end in range(1, len(p) + 1))]:
            del origins[path]
    origins.update((p, o) for p, o in top_origins.items() if not p or p[0] in top)
    return merged


def _merge(base: dict, top: dict, prefix: KeyPath, replaced: set[KeyPath]) -> dict:
    """The merged data of deep_merge; notes in `replaced` each path whose old value top replaced."""
    out = dict(base)
    for key, value in top.items():
        path = (*prefix, key)
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = _merge(out[key], value, path, replaced)
        else:
            if key in out:
                replaced.add(path)
            out[key] = value
    return out


def _forget(origins: Origins, path: KeyPath) -> None:
    """Drop the origins of path and everything below it (the value there was replaced)."""
    for old in [p for p in origins if p[: len(path)] == path]:
        del origins[old]


# ---- overrides -------------------------------------------------------------------------------------------------


def _apply_overrides(data: dict, origins: Origins, overrides: Iterable[str], problems: list[Problem]) -> dict:
    """Set each dotted KEY=VALUE in a copy of data; bad overrides become problems at `<override>`.

    Values are read with the same YAML rules and limits as recipe files, keys at most MAX_DEPTH parts deep.
    """
    data = copy.deepcopy(data)
    overrides = list(overrides)
    if len(overrides) > MAX_OVERRIDES:
        problems.append(Problem(OVERRIDE, None, "", f"{len(overrides):,} overrides; at most {MAX_OVERRIDES:,} "
                                "(put settings like these in a recipe that extends this one)"))  # fmt: skip
        return data
    for full in overrides:
        key, sep, raw = full.partition("=")
        text = full if len(full) <= 120 else full[:117] + "..."  # as quoted in messages
        key = key.strip()
        if not sep or not key or "" in key.split("."):
            problems.append(Problem(OVERRIDE, None, "", f"'{text}' is not KEY=VALUE (e.g. train.learning_rate=1e-4)"))
            continue
        path = tuple(int(p) if p.isascii() and p.isdigit() else p for p in key.split("."))
        if len(path) > MAX_DEPTH:
            problems.append(Problem(OVERRIDE, None, "", f"the key is deeper than {MAX_DEPTH} levels in '{text}'"))
            continue
        try:
            value = parse_value(raw)
        except yaml.YAMLError as exc:
            problems.append(Problem(OVERRIDE, None, dotted(path), f"value: {exc} in '{text}'"))
            continue
        if path[0] == "extends":
            problems.append(Problem(OVERRIDE, None, "extends", f"extends cannot be overridden in '{text}'"))
            continue
        error = _set(data, path, value)
        if error:
            problems.append(Problem(OVERRIDE, None, dotted(path), f"{error} in '{text}'"))
            continue
        origin = Origin(OVERRIDE, None, Path.cwd(), note=text)
        _forget(origins, path)
        for end in range(1, len(path) + 1):
            origins.setdefault(path[:end], origin)
    return data


def _set(data: dict, path: KeyPath, value: Any) -> str | None:
    """Put value at path, creating missing mappings on the way; the reason if the path cannot exist."""
    node: Any = data
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(node, list):
            if not isinstance(part, int) or part >= len(node):
                return f"{dotted(path[:depth]) or 'the recipe'} has no item {part} (it has {len(node)})"
            if last:
                node[part] = value
            node = node[part]
        elif isinstance(node, dict):
            name = str(part)
            if last:
                node[name] = value
            elif node.get(name) is None:
                if isinstance(path[depth + 1], int):
                    return f"{dotted(path[: depth + 1])} is not set, so it has no item {path[depth + 1]}"
                node[name] = {}
            node = node[name]
        else:
            return f"{dotted(path[:depth])} is {node!r}, not a mapping, so it has no key '{part}'"
    return None


# ---- paths and cards -------------------------------------------------------------------------------------------


def _card_refs(data: dict) -> Iterator[tuple[KeyPath, dict]]:
    """Every card reference mapping in data.cards and data.eval_cards, with its key path."""
    section = data.get("data")
    if not isinstance(section, dict):
        return
    for name in ("cards", "eval_cards"):
        refs = section.get(name)
        for index, ref in enumerate(refs if isinstance(refs, list) else []):
            if isinstance(ref, dict):
                yield ("data", name, index), ref


def _resolve_paths(data: dict, origins: Origins) -> None:
    """Make card and template paths absolute, relative to the folder of the file that set each one."""

    def resolve(holder: dict, key: str, path: KeyPath) -> None:
        value = holder.get(key)
        origin = locate(origins, path)
        if isinstance(value, str) and value and origin is not None:
            holder[key] = os.path.normpath(origin.base_dir / Path(value).expanduser())

    for path, ref in _card_refs(data):
        resolve(ref, "path", (*path, "path"))
    if isinstance(data.get("chat"), dict):
        resolve(data["chat"], "template", ("chat", "template"))


def _model_problems(data: dict, origins: Origins) -> list[Problem]:
    """model.name_or_path that cannot be loaded here, and a model.init_from that does not fit the recipe, at the line
    that set each (their types are the schema's business)."""
    model = data.get("model")
    name = model.get("name_or_path") if isinstance(model, dict) else None
    revision = model.get("revision") if isinstance(model, dict) else None
    if not isinstance(name, str) or not name:
        return []
    problem = model_ref_problem(name, revision if isinstance(revision, str) else None)
    found = [] if problem is None else [("model.name_or_path", problem)]
    init_from = model.get("init_from")
    if isinstance(init_from, str) and init_from:
        found += _init_from_problems(data, init_from, name)
    problems = []
    for key, message in found:
        where = locate(origins, tuple(key.split("."))) or locate(origins, ("model", "init_from"))
        where = where or Origin(OVERRIDE, None, Path.cwd())
        note = f" in override '{where.note}'" if where.note else ""
        problems.append(Problem(where.file, where.line, key, message + note))
    return problems


def _init_from_problems(data: dict, init_from: str, name: str) -> list[tuple[str, str]]:
    """model.init_from against what it points at (recipe/init_from.py); method and LoRA keys as the schema reads
    them (their own type errors are the schema's business)."""
    from pydantic import ValidationError

    from qwen35_tune.recipe.init_from import init_problems
    from qwen35_tune.recipe.schema import MethodSection

    try:
        method = MethodSection.model_validate(data.get("method") or {})
    except ValidationError:
        return []
    return init_problems(os.path.abspath(os.path.expanduser(init_from)), method.kind, name, method.lora)


def _load_cards(data: dict, origins: Origins, problems: list[Problem]) -> dict[str, DataCard]:
    """Load every referenced data card; a missing card or a bad key inside one is a problem at its own line."""
    cards: dict[str, DataCard] = {}
    for path, ref in _card_refs(data):
        card_path = ref.get("path")
        if not isinstance(card_path, str) or card_path in cards:
            continue
        if not os.path.isfile(card_path):
            where = locate(origins, (*path, "path")) or Origin(OVERRIDE, None, Path.cwd())
            note = f" in '{where.note}'" if where.note else ""
            problems.append(Problem(where.file, where.line, dotted((*path, "path")),
                                    f"data card not found: {shown(card_path)}{note}"))  # fmt: skip
            continue
        try:
            cards[card_path] = load_card(card_path)
        except RecipeError as err:
            problems.extend(err.problems)
    return cards
