"""A run directory as one typed object: the names of what a run writes there, its ``run.json`` record, and its
resolved ``recipe.yaml`` re-read through the project's own loader (YAML 1.2 core rules, schema defaults).

Training writes it; export, eval, the model card and chat/generate read it only through here, so a file name, a
field of the record or a recipe default exists once. Torch-free: it sits below train/ and export/ (DESIGN.md layers).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from qwen35_tune.errors import RecipeError, UserError
from qwen35_tune.recipe import Recipe, load_recipe
from qwen35_tune.recipe.schema import ALIASES, ExportSection, MethodSection, ModelSection, QuantSection
from qwen35_tune.run_layout import InitKind, MethodKind, RunLayout, RunRecord, StageRecord
from qwen35_tune.yaml_lines import StrictModel, load_yaml, problems_from

log = logging.getLogger(__name__)

__all__ = ["InitKind", "MethodKind", "RecipeView", "RunDir", "RunLayout", "RunRecord", "StageRecord"]


@dataclass(frozen=True)
class RecipeView:
    """The settings export reads from a run's recipe: the validated Recipe's when the recipe loads here, else the same
    keys validated alone by the same schema (``problem`` then says why the whole recipe did not load)."""

    recipe: Recipe | None
    dtype: str
    quantization: QuantSection
    export: ExportSection
    problem: str | None = None


def _schema_field(model: type[BaseModel], name: str) -> tuple:
    """A field of the recipe schema, reused as it is (type, default, bounds, description)."""
    info = model.model_fields[name]
    return info.annotation, info


class _Lenient(BaseModel):
    """The recipe schema's strict values, but keys this view does not read are ignored (not a StrictModel: no recipe
    or card is written against it)."""

    model_config = ConfigDict(**{**StrictModel.model_config, "extra": "ignore"})


# The keys merge reads, with the recipe schema's own fields: a run whose recipe this version refuses elsewhere (a bound
# tightened since, a data card not on this machine) stays mergeable, and defaults still come from the schema alone.
_ModelKeys = create_model("ModelKeys", __base__=_Lenient, dtype=_schema_field(ModelSection, "dtype"))
_MethodKeys = create_model("MethodKeys", __base__=_Lenient, quantization=_schema_field(MethodSection, "quantization"))
_ExportKeys = create_model("ExportKeys", __base__=_Lenient, model=(_ModelKeys, Field(default_factory=_ModelKeys)),
                           method=(_MethodKeys, Field(default_factory=_MethodKeys)),
                           export=_schema_field(Recipe, "export"))


@dataclass(frozen=True)
class RunDir(RunLayout):
    """``RunDir(path)``: the paths of a run directory, its ``run.json`` record (``RunLayout``) and its recipe (each
    read once)."""

    # ---- recipe.yaml ---------------------------------------------------------------------------------------------

    def write_recipe(self, recipe: Recipe) -> None:
        """recipe.yaml, and beside it which file of the extends chain or which override set each value (the chain
        and the command line are not kept anywhere else)."""
        from qwen35_tune.recipe.provenance import value_origins

        self.recipe_yaml.write_text(recipe.to_yaml())
        self.recipe_origins.write_text(json.dumps(value_origins(recipe), indent=1, ensure_ascii=False))

    def recipe_text(self) -> str:
        """recipe.yaml as written ('' without one), for the model card."""
        return self.recipe_yaml.read_text(encoding="utf-8") if self.recipe_yaml.exists() else ""

    @cached_property
    def recipe(self) -> Recipe | None:
        """The resolved recipe validated by ``load_recipe`` (RecipeError if this version refuses it), None if none."""
        return load_recipe(self.recipe_yaml) if self.recipe_yaml.exists() else None

    @cached_property
    def view(self) -> RecipeView:
        """What export reads of the recipe (see ``RecipeView``): never refused for keys export does not read."""
        try:
            recipe = self.recipe
        except UserError as exc:  # a RecipeError listing every problem, or a data card this machine cannot read
            view = self._keys_alone(str(exc))
            log.warning("%s does not load as a recipe in this version of qwen35-tune, so model.dtype, "
                        "method.quantization and export are read alone from it:\n%s", self.recipe_yaml, exc)
            return view
        if recipe is None:  # a run directory assembled by hand: the schema's defaults
            return self._view(_ExportKeys(), None, None)
        return RecipeView(recipe, recipe.model.dtype, recipe.method.quantization or QuantSection(), recipe.export)

    def _view(self, keys: Any, recipe: Recipe | None, problem: str | None) -> RecipeView:
        return RecipeView(recipe, keys.model.dtype, keys.method.quantization or QuantSection(), keys.export, problem)

    def _keys_alone(self, problem: str) -> RecipeView:
        """The keys export reads, validated on their own; UserError naming file:line when even they are refused."""
        doc = load_yaml(self.recipe_yaml)  # a syntax error is a RecipeError with its line already
        try:
            keys = _ExportKeys.model_validate(doc.data if isinstance(doc.data, dict) else {})
        except ValidationError as err:
            problems = problems_from(err.errors(include_url=False), _ExportKeys, doc.origins(), ALIASES)
            raise UserError(f"{RecipeError(problems, 'run recipe')}\nExport reads these keys from the recipe the "
                            f"run trained with, and this version of qwen35-tune refuses them. Correct them in "
                            f"{self.recipe_yaml} (the run's own resolved copy), or export with the qwen35-tune "
                            "version that trained the run.") from None
        return self._view(keys, None, problem)

    # ---- other records -------------------------------------------------------------------------------------------

    def _json(self, path: Path) -> dict:
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: not readable JSON ({exc}); restore it or delete it") from None
        return data if isinstance(data, dict) else {}

    def summary(self) -> dict:
        """summary.json ({} if absent): steps, losses, rows, wall time of the run."""
        return self._json(self.summary_json)

    def data_stats(self) -> dict:
        """data_stats.json ({} if absent): what happened to each card's rows."""
        return self._json(self.data_stats_json)

    def run_config(self) -> dict:
        """run_config.json ({} if absent): recipe files, cards, git revision and kernels, as sent to trackers."""
        return self._json(self.run_config_json)

    def preflight(self) -> dict:
        """preflight.json ({} if absent): trainable parameters per group."""
        return self._json(self.preflight_json)

    def environment(self) -> dict:
        """environment.json ({} if absent): package versions, launch strategy and devices the run started with."""
        return self._json(self.environment_json)

    def value_origins(self) -> dict:
        """recipe_origins.json ({} if absent, e.g. a run from before it was kept): dotted key -> where it was set."""
        return self._json(self.recipe_origins)

    def merged_verify_report(self) -> dict:
        """merged_verify.json ({} if absent): what verifying the merged export measured."""
        return self._json(self.merged_verify)
