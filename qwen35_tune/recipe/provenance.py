"""Which file of the ``extends`` chain, or which command-line override, set each value of a resolved recipe.

``load_recipe`` knows it (every value keeps its file:line for error messages); a run directory keeps it as
``recipe_origins.json``, since the chain and the command line are gone once the run is over. Torch-free.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import AliasChoices, BaseModel
from pydantic_core import to_jsonable_python

from qwen35_tune.recipe.load import OVERRIDE  # the "file" of a value set on the command line


def recipe_leaves(recipe: BaseModel | dict) -> dict[str, Any]:
    """Every leaf value of the recipe by dotted key (``train.learning_rate``, ``data.cards.0.weight``), as JSON
    values; a list of plain values is one leaf (``target_modules``), a list of mappings is walked by index."""
    return {key: value for key, value, _ in _walk(recipe, (), (), {})}


def value_origins(recipe) -> dict[str, dict]:
    """``{"train.learning_rate": {"file": "recipes/x.yaml", "path": "/abs/recipes/x.yaml", "line": 23}, ...}``;
    an override is ``{"override": "train.max_steps=5"}``; a key that no file or override set (a default) is absent.
    """
    origins = recipe.origins
    out: dict[str, dict] = {}
    for key, _, written in _walk(recipe, (), (), origins):
        origin = _origin_of(origins, written)
        if origin is None:
            continue
        if origin.file == OVERRIDE:
            out[key] = {"override": origin.note}
        else:
            name = origin.file.replace("\\", "/").rsplit("/", 1)[-1]
            out[key] = {"file": origin.file, "path": str(origin.base_dir / name), "line": origin.line}
    return out


def _origin_of(origins: dict, written: tuple) -> Any:
    """The origin of the value at ``written`` (the key path as the YAML spelled it), or None for a default.

    The deepest key set on the path decides: the key itself; or a value that holds this one whole (a list, an
    override's mapping); a file's mapping or list item that merely holds other keys means the schema's default.
    """
    for end in range(len(written), 0, -1):
        origin = origins.get(written[:end])
        if origin is None:
            continue
        if end == len(written):
            return origin
        overridden = origin.file == OVERRIDE and origin.note.split("=", 1)[0].count(".") + 1 <= end
        return origin if overridden else None
    return None


def _spellings(model: type[BaseModel], name: str) -> list[str]:
    """The field's own name and every alias a recipe may use for it (``chat.thinking`` / ``enable_thinking``)."""
    alias = model.model_fields[name].validation_alias
    names = [name]
    if isinstance(alias, AliasChoices):
        names += [c for c in alias.choices if isinstance(c, str) and c != name]
    elif isinstance(alias, str) and alias != name:
        names.append(alias)
    return names


def _walk(value: Any, key: tuple, written: tuple, origins: dict) -> Iterator[tuple[str, Any, tuple]]:
    """(dotted key, JSON value, key path as the YAML wrote it) for every leaf below ``value``."""
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            if name == "extends":
                continue
            spelled = next((s for s in _spellings(type(value), name) if (*written, s) in origins), name)
            yield from _walk(getattr(value, name), (*key, name), (*written, spelled), origins)
    elif isinstance(value, dict) and value:
        for name, child in value.items():
            yield from _walk(child, (*key, str(name)), (*written, name), origins)
    elif isinstance(value, (list, tuple)) and any(isinstance(v, (BaseModel, dict)) for v in value):
        for index, child in enumerate(value):
            yield from _walk(child, (*key, str(index)), (*written, index), origins)
    else:
        yield ".".join(key), to_jsonable_python(value), written
