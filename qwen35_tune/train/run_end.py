"""The end of a training run, the same for every stage: the summary, the trained weights with their tokenizer,
processor and run record, the metrics plot, and the merged (verified) export and its upload when the recipe asks."""

from __future__ import annotations

import platform
import time
from pathlib import Path

from qwen35_tune import strict_json
from qwen35_tune.models.portable_configs import strip_machine_keys
from qwen35_tune.rundir import RunDir, RunRecord
from qwen35_tune.train.callbacks import plot_metrics, read_metrics


def write_summary(run_dir: Path, recipe, trainer, started: float, stats: dict, extra: dict | None = None) -> dict:
    """summary.json (rank 0 writes it; every rank returns it): steps, rows, losses, wall time, hardware; ``extra``
    adds a stage's own figures."""
    metrics = read_metrics(run_dir / "metrics.jsonl")
    losses = [m["loss"] for m in metrics if "loss" in m]
    averages = [m["train_loss"] for m in metrics if "train_loss" in m]  # the end-of-run mean, logged every run
    summary = {
        "name": recipe.name,
        "model": recipe.model.name_or_path,
        "method": recipe.method.kind,
        "steps": trainer.state.global_step,
        "train_rows": stats["train_rows"],
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "train_loss": averages[-1] if averages else None,  # present even when no step was logged (max_steps=1)
        "wall_seconds": round(time.time() - started, 2),
        "hardware": platform.processor() or platform.machine(),
        "world_size": trainer.args.world_size,  # processes that trained (the distributed tests assert it)
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,  # derived from global_batch_size
        **(extra or {}),
    }
    if trainer.is_world_process_zero():  # every rank returns the summary; one writes it (no torn JSON)
        (run_dir / "summary.json").write_text(strict_json.dumps(summary, indent=2))
    return summary


def save_trained(trainer, recipe, setup, run_dir: Path) -> Path:
    """The trained weights (adapter, or model for a full fine-tune) with the processor and the exact chat template
    trained with, then run.json (which marks the run finished) and metrics.png; returns the weights folder."""
    out = run_dir / ("model" if recipe.method.kind == "full" else "adapter")
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():  # save_model is rank-aware; these plain writes are not
        setup.save_preprocessing(out)  # processor (image/video settings), then the exact chat template trained with
        strip_machine_keys(out)  # is_local / local_files_only / local paths describe this machine, not the model
        RunDir(run_dir).write_run(RunRecord(base_model=recipe.model.name_or_path, base_path=setup.model_path,
                                            method=recipe.method.kind, weights=out.name))
        plot_metrics(run_dir / "metrics.jsonl", run_dir / "metrics.png")
    return out


def export_run(recipe, run_dir: Path, trainer, summary: dict) -> dict:
    """Merge (and verify) into one folder on rank 0 when ``export.merge`` is on, then upload it when
    ``export.push_to_hub`` is; ``summary`` gains ``merged_dir`` / ``hub_repo_id``."""
    if recipe.export.merge and trainer.is_world_process_zero():  # one merged folder, written by rank 0
        from qwen35_tune.export.merge import merge_run

        merged = merge_run(run_dir, Path(recipe.export.merged_dir) if recipe.export.merged_dir else None)
        summary["merged_dir"] = str(merged)
        if recipe.export.push_to_hub:  # after verification passed (merge_run raises otherwise)
            from qwen35_tune.export.publish import publish_folder

            publish_folder(merged, recipe.export.hub_repo_id, private=recipe.export.private)
            summary["hub_repo_id"] = recipe.export.hub_repo_id
    return summary
