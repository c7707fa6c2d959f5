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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from qwen35_tune.errors import RecipeError, UserError
from qwen35_tune.recipe import Recipe, load_recipe
from qwen35_tune.recipe.schema import ALIASES, ExportSection, MethodSection, ModelSection, QuantSection
from qwen35_tune.yaml_lines import StrictModel, load_yaml, problems_from

log = logging.getLogger(__name__)

MethodKind = MethodSection.model_fields["kind"].annotation  # the recipe's method.kind choices


class _Entry:
    """One file or folder of a run directory: ``RunDir.run_json.name`` is its name, ``run.run_json`` its path."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, run: RunDir | None, owner: type | None = None) -> Any:
        return self if run is None else run.path / self.name


InitKind = Literal["adapter", "weights"]


class StageRecord(BaseModel):
    """One training stage in the chain that made a run's weights (``run.json``'s ``stages``, oldest first)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    stage: str | None = Field(None, description="sft | dpo | grpo; None for a folder no qwen35-tune run wrote")
    method: str | None = Field(None, description="the stage's method.kind (lora, qlora, full)")
    path: str = Field(description="its run directory (or the adapter / model folder a run started from)")
    init: InitKind | None = Field(None, description="how it started from the entry before it: its adapter trained "
                                  "further, or its weights as the base")


class RunRecord(BaseModel):
    """``run.json``: what a finished run trained from and where its weights are (written once training finished)."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # a newer version's extra fields do not block reading

    base_model: str = Field(description="the recipe's model.name_or_path: hub id, local folder or tiny://KIND")
    base_path: str = Field(description="the local folder training loaded the base from")
    method: MethodKind = Field(description="the recipe's method.kind")
    weights: Literal["adapter", "model"] = Field(description="the run-directory folder holding the trained weights")
    stage: str = Field("sft", description="the recipe's stage (runs older than stages were all sft)")
    init_from: str | None = Field(None, description="the recipe's model.init_from: the folder this run started from")
    init_kind: InitKind | None = Field(None, description="'adapter': init_from's adapter trained further on "
                                       "base_path; 'weights': base_path is init_from's model (not model.name_or_path)")
    stages: tuple[StageRecord, ...] = Field((), description="the chain of stages that made these weights, this run "
                                            "last (empty in runs older than stages)")

    def chain(self, run_dir: Path | str) -> tuple[StageRecord, ...]:
        """``stages``, or for a run older than them the one stage it was."""
        return self.stages or (StageRecord(stage=self.stage, method=self.method, path=str(run_dir)),)

    def to_json(self) -> str:
        """The file's text (the layout train has always written: 2-space indent, no trailing newline)."""
        return json.dumps(self.model_dump(mode="json"), indent=2)


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
class RunDir:
    """``RunDir(path)``: the paths of a run directory, its ``run.json`` record and its recipe (each read once)."""

    path: Path

    recipe_yaml = _Entry("recipe.yaml")
    recipe_origins = _Entry("recipe_origins.json")  # which file:line or override set each recipe value
    run_json = _Entry("run.json")
    summary_json = _Entry("summary.json")
    metrics_jsonl = _Entry("metrics.jsonl")
    metrics_discarded = _Entry("metrics.discarded.jsonl")
    metrics_png = _Entry("metrics.png")
    run_config_json = _Entry("run_config.json")
    preflight_json = _Entry("preflight.json")
    preflight_txt = _Entry("preflight.txt")
    data_stats_json = _Entry("data_stats.json")
    quarantine_jsonl = _Entry("quarantine.jsonl")
    quarantine_stream_jsonl = _Entry("quarantine.stream.jsonl")  # streaming cards' bad rows, as training reads
    completions_jsonl = _Entry("completions.jsonl")  # stage: grpo, a sample of completions with their rewards
    lengths_png = _Entry("lengths.png")
    adapter = _Entry("adapter")
    model = _Entry("model")
    checkpoints = _Entry("checkpoints")
    merged = _Entry("merged")
    merged_verify = _Entry("merged_verify.json")
    adapter_export = _Entry("adapter_export")
    tensorboard = _Entry("tensorboard")
    wandb = _Entry("wandb")
    eval = _Entry("eval")
    lock = _Entry("run.lock")
    environment_json = _Entry("environment.json")  # package versions, launch strategy, devices (at start)
    report_html = _Entry("report.html")

    # Whose presence means "a run trained here" (a run that failed before its first step leaves only recipe.yaml /
    # data_stats.json: nothing to lose, so starting again over it needs no flag).
    MARKERS = tuple(e.name for e in (metrics_jsonl, summary_json, run_json, adapter, model, checkpoints))
    # What a run writes here: removed by --overwrite (nothing else in the folder is touched).
    ARTIFACTS = (*MARKERS, *(e.name for e in (
        recipe_yaml, metrics_discarded, metrics_png, run_config_json, preflight_json, preflight_txt, data_stats_json,
        quarantine_jsonl, lengths_png, merged, merged_verify, adapter_export, tensorboard, wandb, eval, recipe_origins,
        environment_json, report_html, quarantine_stream_jsonl, completions_jsonl)))

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of(cls, run_dir: RunDir | str | Path) -> RunDir:
        return run_dir if isinstance(run_dir, RunDir) else cls(Path(run_dir))

    # ---- run.json ------------------------------------------------------------------------------------------------

    def is_finished(self) -> bool:
        """Whether training finished here (run.json is written after the weights)."""
        return self.run_json.is_file()

    @cached_property
    def run(self) -> RunRecord:
        """The run.json record; UserError when there is none or it is not one."""
        path = self.run_json
        if not path.exists():
            raise UserError(f"{self.path} is not a finished qwen35-tune run (no run.json); pass the run directory")
        try:
            return RunRecord.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            problem = exc.strerror if isinstance(exc, OSError) else "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'the file'}: {e['msg']}" for e in exc.errors(include_url=False))
            raise UserError(f"{path}: not a readable run record ({problem}); it is written by 'qwen35-tune train' "
                            "when a run finishes") from None

    def write_run(self, record: RunRecord) -> None:
        self.run_json.write_text(record.to_json())

    @property
    def weights(self) -> Path:
        """The trained weights: the adapter folder, or the full fine-tune's model folder."""
        return self.path / self.run.weights

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
