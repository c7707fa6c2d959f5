"""The layout of a run directory and its ``run.json`` record, with no recipe behind them.

Split from ``rundir`` (which adds the resolved recipe) so the recipe layer can read a finished run while it
validates ``model.init_from`` without importing the module that imports the recipe (no import cycle).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qwen35_tune.errors import UserError
from qwen35_tune.recipe.schema import MethodSection

MethodKind = MethodSection.model_fields["kind"].annotation  # the recipe's method.kind choices


class _Entry:
    """One file or folder of a run directory: ``RunLayout.run_json.name`` is its name, ``run.run_json`` its path."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, run: RunLayout | None, owner: type | None = None) -> Any:
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
class RunLayout:
    """The names of what a run writes and its ``run.json`` record: what reading a run needs below the recipe layer
    (``recipe.init_from`` reads finished runs while a recipe is validated); ``RunDir`` adds the recipe."""

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
    def of(cls, run_dir: RunLayout | str | Path):
        if isinstance(run_dir, cls):
            return run_dir
        return cls(Path(run_dir.path if isinstance(run_dir, RunLayout) else run_dir))

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
