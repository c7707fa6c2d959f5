"""Read a data card file into a validated DataCard, reporting every problem with the card's file:line."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from qwen35_tune.cards.schema import DataCard
from qwen35_tune.errors import Problem, RecipeError
from qwen35_tune.yaml_lines import load_yaml, problems_from, shown

CARD_SUFFIXES = (".yaml", ".yml")


def load_card(path: str | Path) -> DataCard:
    """Load and validate one data card; source paths resolve against the card's folder.

    Raises RecipeError(what="data card") listing all problems, each at the card file's line.
    """
    path = Path(os.path.abspath(Path(path).expanduser()))
    if not path.is_file():
        raise RecipeError([Problem(shown(path), None, "", "data card file not found")], what="data card")
    if path.suffix not in CARD_SUFFIXES:
        raise RecipeError([Problem(shown(path), None, "", "a data card is a .yaml file")], what="data card")
    doc = load_yaml(path, what="data card")
    data = {} if doc.data is None else doc.data
    if not isinstance(data, dict):
        raise RecipeError([Problem(shown(path), 1, "", "a data card must be a mapping of keys")], what="data card")
    try:
        return DataCard.model_validate(data, context={"base_dir": path.parent, "card_file": path})
    except ValidationError as err:
        problems = problems_from(err.errors(include_url=False), DataCard, doc.origins())
        raise RecipeError(problems, what="data card") from None
