"""One run directory, read through RunDir, as the plain values the page template shows, section by section.

Every reader is forgiving: a run that failed early, was preempted, or comes from an older version still gets a page
with what exists, and each missing part says why it is missing.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.recipe.provenance import recipe_leaves
from qwen35_tune.report.eval_facts import read_eval
from qwen35_tune.report.export_facts import read_export
from qwen35_tune.report.quarantine_sample import sample_quarantine
from qwen35_tune.report.series import read_series
from qwen35_tune.report.training_view import training_view
from qwen35_tune.rundir import RunDir

log = logging.getLogger(__name__)


@dataclass
class RunView:
    """Everything the run page shows."""

    run_dir: Path
    name: str
    generated_at: str
    status: dict
    summary: list
    recipe: dict
    data: dict
    training: dict
    evaluation: list
    export: object
    environment: dict
    leaves: dict = field(default_factory=dict)  # the resolved recipe by dotted key (the comparison page uses it)
    series: object = None


def is_run_dir(run: RunDir) -> bool:
    """Whether anything a training run writes is there (a failed data build leaves only recipe.yaml and stats)."""
    return any((run.path / name).exists() for name in (*RunDir.MARKERS, RunDir.recipe_yaml.name,
                                                        RunDir.data_stats_json.name))


def load_recipe_of(run: RunDir) -> tuple[object | None, dict, str | None]:
    """(validated recipe or None, the recipe's leaf values by dotted key, why it did not load or None)."""
    from qwen35_tune.yaml_lines import load_yaml

    try:
        recipe = run.recipe
    except UserError as exc:
        try:
            data = load_yaml(run.recipe_yaml).data
        except UserError:
            data = None
        return None, (recipe_leaves_of_data(data) if isinstance(data, dict) else {}), str(exc)
    if recipe is None:
        return None, {}, "no recipe.yaml in the run directory"
    return recipe, recipe_leaves(recipe), None


def recipe_leaves_of_data(data: dict) -> dict:
    """Leaf values of a recipe that did not validate, read as plain YAML data (no defaults filled in)."""
    return recipe_leaves({k: v for k, v in data.items() if k != "extends"})


def run_status(run: RunDir, summary: dict, stats: dict, failure: BaseException | None) -> dict:
    """{'kind': finished|stopped|failed|incomplete, 'text': one sentence}."""
    if failure is not None:
        if isinstance(failure, KeyboardInterrupt):
            return {"kind": "failed", "text": "interrupted (Ctrl-C) before the run finished"}
        words = str(failure).strip() or type(failure).__name__
        return {"kind": "failed", "text": f"failed: {words}"}
    if run.is_finished():
        return {"kind": "finished", "text": "finished: weights saved"}
    if summary:
        return {"kind": "stopped", "text": f"stopped early at step {summary.get('steps')} (preempted): a checkpoint "
                "was saved; continue with `qwen35-tune train RECIPE --resume auto --output-dir RUN_DIR`"}
    if stats.get("error"):
        return {"kind": "failed", "text": f"failed while building the data: {stats['error']}"}
    return {"kind": "incomplete", "text": "incomplete: the run failed, was killed, or is still running (no "
            "summary.json)"}


def _value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def recipe_view(run: RunDir, leaves: dict, problem: str | None) -> dict:
    """The resolved values with where each was set, split into set ones and defaults."""
    origins = run.value_origins()
    rows_set, rows_default = [], []
    for key, value in leaves.items():
        origin = origins.get(key)
        if origin is None:
            rows_default.append({"key": key, "value": _value(value)})
        elif "override" in origin:
            rows_set.append({"key": key, "value": _value(value), "where": "command line",
                             "detail": origin["override"], "kind": "override"})
        else:
            rows_set.append({"key": key, "value": _value(value), "where": f"{origin.get('file')}:{origin.get('line')}",
                             "detail": origin.get("path", ""), "kind": "file"})
    files = list(dict.fromkeys(r["where"].rsplit(":", 1)[0] for r in rows_set if r["kind"] == "file"))
    overrides = list(dict.fromkeys(r["detail"] for r in rows_set if r["kind"] == "override"))
    return {"problem": problem, "rows_set": rows_set, "rows_default": rows_default, "files": files,
            "overrides": overrides, "has_origins": bool(origins), "yaml": run.recipe_text()}


def _fmt_seconds(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "n/a"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def summary_rows(run: RunDir, recipe, leaves: dict, summary: dict, stats: dict, env: dict, preflight: dict,
                 series, evaluation: list, export) -> list[tuple[str, str]]:
    """(label, value) lines of the summary at the top of the page."""
    from qwen35_tune.report.svg import fmt

    loss = summary.get("final_loss", series.last("loss"))
    first = summary.get("first_loss")
    rows = [("model", summary.get("model") or leaves.get("model.name_or_path", "n/a")),
            ("method", summary.get("method") or leaves.get("method.kind", "n/a")),
            ("stage", "supervised fine-tuning (SFT)"),
            ("steps", str(summary.get("steps", series.last_step()))),
            ("wall time", _fmt_seconds(summary.get("wall_seconds"))),
            ("hardware", ", ".join(env.get("devices") or []) or summary.get("hardware") or env.get("processor")
             or "n/a"),
            ("final loss", (fmt(loss) if loss is not None else "n/a") + (f" (first {fmt(first)})" if first else "")),
            ("rows", f"{stats.get('train_rows', 'n/a')} train, {stats.get('eval_rows', 'n/a')} eval")]
    total = preflight.get("total") or {}
    if total:
        rows.append(("trained parameters", f"{total.get('trainable', 0):,} of {total.get('params', 0):,} "
                     f"({preflight.get('trainable_percent', 0):.3g}%)"))
    merged = {"verified": f"{export.folder} (verified)", "not verified": f"{export.folder} (NOT verified)",
              "failed": f"{export.folder} (verification FAILED)"}.get(export.state, "none")
    rows.append(("merged model", merged))
    heads = [f"{r.suite} {mode}: {r.primary} {fmt(v) if isinstance(v, (int, float)) else 'n/a'}"
             for r in evaluation for mode, v in r.headline()]
    rows.append(("evaluation", "; ".join(heads) if heads else "none"))
    return rows


def build_run_view(run_dir: Path, failure: BaseException | None = None, with_rows: bool = True) -> RunView:
    """Read the run directory into a RunView (see the module doc)."""
    from qwen35_tune.report.data_view import data_view
    from qwen35_tune.report.environment_view import environment_view

    run = RunDir(Path(run_dir))
    if not run.path.is_dir() or not is_run_dir(run):
        raise UserError(f"{run.path} is not a qwen35-tune run directory (no recipe.yaml, metrics.jsonl, summary.json "
                        "or run.json); pass the --output-dir of a `qwen35-tune train` run")
    recipe, leaves, problem = load_recipe_of(run)
    summary, stats, env, preflight = run.summary(), run.data_stats(), run.environment(), run.preflight()
    series = read_series(run.metrics_jsonl)
    evaluation = read_eval(run)
    export = read_export(run, recipe)
    quarantine = sample_quarantine(run.quarantine_jsonl)
    name = summary.get("name") or leaves.get("name") or run.path.name
    return RunView(
        run_dir=run.path, name=str(name), generated_at=time.strftime("%Y-%m-%d %H:%M:%S"),
        status=run_status(run, summary, stats, failure),
        summary=summary_rows(run, recipe, leaves, summary, stats, env, preflight, series, evaluation, export),
        recipe=recipe_view(run, leaves, problem),
        data=data_view(run, recipe, leaves, stats, quarantine, with_rows),
        training=training_view(series, preflight),
        evaluation=evaluation, export=export,
        environment=environment_view(env, run.run_config(), summary),
        leaves=leaves, series=series)
