"""What every training stage (train/sft.py, train/dpo.py, ...) does around its library trainer, written once: the
trainer arguments the recipe's ``train`` section gives, the checks and the claimed run directory, the final save with
its run record, the summary, and the export. A stage's ``run_*`` reads top to bottom between these steps."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from qwen35_tune import strict_json
from qwen35_tune.errors import UserError
from qwen35_tune.models.load import resolve_dtype
from qwen35_tune.models.portable_configs import strip_machine_keys
from qwen35_tune.report.hook import report_on_exit
from qwen35_tune.rundir import RunDir, RunRecord
from qwen35_tune.train.callbacks import plot_metrics, read_metrics
from qwen35_tune.train.distributed import gradient_accumulation, main_process_dir
from qwen35_tune.train.eval_schedule import eval_arguments
from qwen35_tune.train.guards import check_recipe_runnable, storage_errors
from qwen35_tune.train.launch_precision import enforce_recipe_precision
from qwen35_tune.train.model_setup import ModelSetup, setup_model
from qwen35_tune.train.run_claim import claim_run_dir
from qwen35_tune.train.run_summary import record_export, summary_facts

# Recipe `train` keys that are ours or need translating; the rest are TrainingArguments / TRL config names passed
# through unchanged.
RECIPE_TRAIN_KEYS = {"extra", "bf16", "packing", "packing_length", "gradient_checkpointing", "learning_rates",
                     "global_batch_size"}


def trainer_arguments(recipe, run_dir: Path, eval_rows: int | None = None) -> dict:
    """The trainer config arguments of the recipe's ``train`` section (with ``train.extra``) that every stage's TRL
    config takes; a stage adds its own and builds its config class with ``build_config``. ``eval_rows``: rows the data
    build held out (None: whether the recipe holds any out), for the eval schedule."""
    import torch

    train = recipe.train
    kwargs = {k: v for k, v in train.model_dump().items() if k not in RECIPE_TRAIN_KEYS}
    on_cuda = torch.cuda.is_available()
    # a bf16 model trains with bf16 autocast over fp32 master weights (train/precision.py), on CPU as on CUDA
    bf16 = train.bf16 if train.bf16 is not None else resolve_dtype(recipe.model.dtype) == torch.bfloat16
    kwargs.update(
        output_dir=str(run_dir / "checkpoints"),
        seed=recipe.seed,
        data_seed=recipe.seed,
        bf16=bf16,
        report_to=[r for r in recipe.tracking.report_to if r != "none"] or "none",
        run_name=recipe.tracking.run_name or recipe.name,
        disable_tqdm=True,  # the rich progress bar replaces tqdm
        remove_unused_columns=False,
        use_cpu=not on_cuda,
        # transformers 5.x name; `gradient_checkpointing` (our recipe key) is its deprecated alias there
        activation_checkpointing=train.gradient_checkpointing,
        gradient_accumulation_steps=gradient_accumulation(train),  # derived from train.global_batch_size if given
        **eval_arguments(train, recipe.has_eval_data if eval_rows is None else eval_rows),  # eval loss by default
        **train.extra,
    )
    # Loss = summed token losses / real target tokens of the whole optimizer step (all micro-batches and ranks), so
    # N ranks x G accumulation steps train like one process with the same global batch. transformers' default;
    # pinned because tests/smoke/test_distributed_cpu.py relies on it (train.extra may still turn it off).
    kwargs.setdefault("average_tokens_across_devices", True)
    enforce_recipe_precision(bf16, bool(kwargs.get("fp16")))  # a launch config's mixed_precision must not override
    return kwargs


def build_config(config_class, kwargs: dict):
    """``config_class(**kwargs)``; what the library refuses is the user's to fix (train.extra mostly)."""
    try:
        return config_class(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"train: the trainer rejected these settings (check train.extra): {exc}") from None


def run_claimed(recipe, run_dir: Path, train: Callable, callbacks: tuple = (), resume: str | None = None,
                overwrite: bool = False) -> dict:  # fmt: skip
    """Before any data or weights: recipe settings that would waste the run, the model's architecture and size against
    this machine (``setup_model``); then ``train(recipe, setup, run_dir, callbacks, resume)`` in the locked and
    checked run directory (``train.run_lock``, ``train.run_claim``), with storage failures in plain words."""
    run_dir = Path(run_dir)
    check_recipe_runnable(recipe)
    setup = setup_model(recipe)
    with storage_errors(run_dir), claim_run_dir(recipe, run_dir, resume, overwrite, main_process_dir(run_dir)), \
            report_on_exit(run_dir):  # report.html however the run ends (best-effort: a warning if it cannot)
        return train(recipe, setup, run_dir, callbacks, resume)


def open_run_dir(recipe, run_dir: Path) -> Path | None:
    """Create the run directory and write the resolved recipe; returns it on the process that writes (None on the
    other ranks: they build the same data but write nothing)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    writes = main_process_dir(run_dir)
    if writes:
        RunDir(run_dir).write_recipe(recipe)
    return writes


def save_trained(trainer, recipe, setup: ModelSetup, run_dir: Path) -> Path:
    """The trained weights into ``adapter/`` (or ``model/``) with the processor and the exact chat template trained
    with, then ``run.json`` (what the run trained from, the chain of stages) and the metrics plot."""
    from qwen35_tune.train.init_from import stage_chain

    out = run_dir / ("model" if recipe.method.kind == "full" else "adapter")
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():  # save_model is rank-aware; these plain writes are not
        setup.save_preprocessing(out)  # processor (image/video settings), then the exact chat template trained with
        strip_machine_keys(out)  # is_local / local_files_only / local paths describe this machine, not the model
        init = setup.init
        RunDir(run_dir).write_run(RunRecord(
            base_model=recipe.model.name_or_path, base_path=setup.model_path, method=recipe.method.kind,
            weights=out.name, stage=recipe.stage, init_from=str(init.given) if init else None,
            init_kind=init.kind if init else None, stages=stage_chain(recipe, init, run_dir)))
        plot_metrics(run_dir / "metrics.jsonl", run_dir / "metrics.png")
    return out


def write_summary(run_dir: Path, recipe, trainer, started: float, stats: dict, **extra) -> dict:
    """summary.json: steps, losses, rows, wall time (``extra``: a stage's own figures); every rank returns it, one
    writes it."""
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
        **summary_facts(run_dir, metrics),  # final eval_loss, trainable parameters, hardware (CPU model, GPUs)
        "world_size": trainer.args.world_size,  # processes that trained (the distributed tests assert it)
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,  # derived from global_batch_size
        **extra,
    }
    if trainer.is_world_process_zero():  # every rank returns the summary; one writes it (no torn JSON)
        (run_dir / "summary.json").write_text(strict_json.dumps(summary, indent=2))
    return summary


def export_trained(recipe, run_dir: Path, trainer, summary: dict) -> dict:
    """``export.merge``: one merged, verified folder written by rank 0 (and published with ``export.push_to_hub``);
    returns ``summary`` with where it went."""
    if recipe.export.merge and trainer.is_world_process_zero():
        from qwen35_tune.export.merge import merge_run

        merged = merge_run(run_dir, Path(recipe.export.merged_dir) if recipe.export.merged_dir else None)
        record_export(run_dir, summary, merged_dir=str(merged))  # summary.json names the merged folder
        if recipe.export.push_to_hub:  # after verification passed (merge_run raises otherwise)
            from qwen35_tune.export.publish import publish_folder

            publish_folder(merged, recipe.export.hub_repo_id, private=recipe.export.private)
            record_export(run_dir, summary, hub_repo_id=recipe.export.hub_repo_id)
    return summary


def trainer_wiring(recipe, run_dir: Path, callbacks: tuple) -> dict:
    """The trainer arguments every stage passes the same way: metrics file, progress lines, the caller's callbacks,
    the run directory (atomic checkpoints, stream state) and per-part learning rates as optimizer groups."""
    from qwen35_tune.train.callbacks import MetricsFileCallback
    from qwen35_tune.train.progress import progress_callback

    return {"callbacks": [MetricsFileCallback(run_dir / "metrics.jsonl"), progress_callback(), *callbacks],
            "run_dir": run_dir, "learning_rates": recipe.train.learning_rates.given()}


def start_training(trainer, recipe, setup: ModelSetup, run_dir: Path, resume: str | None) -> None:
    """What every stage does between building its trainer and training: trackers (recipe, model, cards, git revision;
    rank 0), generation eval suites, fp32 masters where no library keeps them, the preflight table (which stops MoE
    runs that skip experts/GDN); then train, resuming from ``resume``'s checkpoint."""
    from qwen35_tune.train.eval_callback import attach_generation_eval
    from qwen35_tune.train.precision import keep_training_precision
    from qwen35_tune.train.preflight import run_preflight
    from qwen35_tune.train.resume import find_resume_checkpoint
    from qwen35_tune.train.tracking import attach_tracking

    attach_tracking(trainer, recipe, run_dir)
    attach_generation_eval(trainer, recipe, run_dir, setup.tokenizer)
    keep_training_precision(trainer, recipe, setup.model_path)
    run_preflight(recipe, trainer.model, run_dir)
    trainer.train(resume_from_checkpoint=find_resume_checkpoint(resume, run_dir / "checkpoints"))
