"""Supervised fine-tuning: one top-to-bottom function over TRL's SFTTrainer, with our data and our run directory."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from qwen35_tune import strict_json
from qwen35_tune.data.build import build_datasets
from qwen35_tune.errors import UserError
from qwen35_tune.models.load import resolve_dtype
from qwen35_tune.models.portable_configs import strip_machine_keys
from qwen35_tune.report.hook import report_on_exit
from qwen35_tune.rundir import RunDir, RunRecord
from qwen35_tune.train.batching import prepare_batching
from qwen35_tune.train.callbacks import MetricsFileCallback, plot_metrics, read_metrics
from qwen35_tune.train.distributed import gradient_accumulation, main_process_dir
from qwen35_tune.train.eval_callback import attach_generation_eval
from qwen35_tune.train.eval_schedule import eval_arguments
from qwen35_tune.train.guards import check_recipe_runnable, storage_errors
from qwen35_tune.train.launch_precision import enforce_recipe_precision
from qwen35_tune.train.model_setup import ModelSetup, setup_model
from qwen35_tune.train.precision import keep_training_precision
from qwen35_tune.train.preflight import run_preflight
from qwen35_tune.train.progress import progress_callback
from qwen35_tune.train.resume import find_resume_checkpoint
from qwen35_tune.train.run_claim import claim_run_dir
from qwen35_tune.train.run_summary import record_export, summary_facts
from qwen35_tune.train.tracking import attach_tracking

log = logging.getLogger(__name__)

# Recipe `train` keys that are ours or need translating; the rest are SFTConfig names passed through unchanged.
_NOT_SFT_KEYS = {"extra", "bf16", "packing", "packing_length", "gradient_checkpointing", "learning_rates",
                 "global_batch_size"}


def build_sft_config(recipe, run_dir: Path, eval_rows: int | None = None):
    """SFTConfig from the recipe's ``train`` section; ``train.extra`` is validated by building the object.
    ``eval_rows``: rows the data build held out (None: whether the recipe holds any out), for the eval schedule."""
    import torch
    from trl import SFTConfig

    train = recipe.train
    kwargs = {k: v for k, v in train.model_dump().items() if k not in _NOT_SFT_KEYS}
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
        # Our rows arrive tokenised, masked and truncated (with counts); TRL must not re-process or drop them.
        dataset_kwargs={"skip_prepare_dataset": True},
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
    try:
        return SFTConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"train: the trainer rejected these settings (check train.extra): {exc}") from None


def _write_summary(run_dir: Path, recipe, trainer, started: float, stats: dict) -> dict:
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
    }
    if trainer.is_world_process_zero():  # every rank returns the summary; one writes it (no torn JSON)
        (run_dir / "summary.json").write_text(strict_json.dumps(summary, indent=2))
    return summary


def run_sft(recipe, run_dir: Path, callbacks: tuple = (), resume: str | None = None, overwrite: bool = False) -> dict:
    """Train the recipe into ``run_dir`` and return the run summary; merges when ``export.merge`` is on.

    ``callbacks`` are extra transformers TrainerCallbacks (tests use one to watch parameters change).
    ``resume``: None, 'auto' (newest valid checkpoint in run_dir/checkpoints, if any) or a checkpoint folder.
    ``overwrite``: a fresh run may replace a run already in ``run_dir`` (otherwise that is refused).
    A SIGTERM/SIGUSR1 saves a checkpoint and returns early with ``summary["preempted"]`` set.
    The model side (the checks below, tokenizer and processor, later the weights) is ``train.model_setup``.
    Before any data or weights: recipe settings that would waste the run, the model's architecture and size
    against this machine; then the run directory is locked (``train.run_lock``) and checked (``train.run_claim``).
    """
    run_dir = Path(run_dir)
    check_recipe_runnable(recipe)
    setup = setup_model(recipe)
    with storage_errors(run_dir), claim_run_dir(recipe, run_dir, resume, overwrite, main_process_dir(run_dir)), \
            report_on_exit(run_dir):  # report.html however the run ends (best-effort: a warning if it cannot)
        return _train_sft(recipe, setup, run_dir, callbacks, resume)


def _train_sft(recipe, setup: ModelSetup, run_dir: Path, callbacks: tuple, resume: str | None) -> dict:
    """The run itself, in a run directory this process may write (see ``run_sft``)."""
    from qwen35_tune.train.trainer import QwenSFTTrainer

    started = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    writes = main_process_dir(run_dir)  # None on other ranks: they build the same data but write nothing
    if writes:
        RunDir(run_dir).write_recipe(recipe)
    tokenizer, processor, model_path = setup.tokenizer, setup.processor, setup.model_path
    train_ds, eval_ds, stats = build_datasets(recipe, tokenizer, writes, processor=processor)
    log.info("data: %s train rows, %d eval rows", stats["train_rows"] if stats["train_rows"] is not None
             else "streamed", stats["eval_rows"])  # fmt: skip
    train_ds, eval_ds, collator = prepare_batching(
        recipe, train_ds, eval_ds, tokenizer.pad_token_id, writes, processor=processor
    )
    eval_rows = len(eval_ds) if eval_ds is not None else 0  # none: nothing to evaluate (train/eval_schedule.py)
    sft_config = build_sft_config(recipe, run_dir, eval_rows)  # before the weights: under ZeRO-3 the load shards
    loaded = setup.load_weights(sft_config)
    if hasattr(collator, "bind_model"):  # packed image rows take their M-RoPE indices from the model
        collator.bind_model(loaded.model)
    trainer = QwenSFTTrainer(
        model=loaded.model,
        args=sft_config,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        processing_class=tokenizer,
        peft_config=loaded.peft_config,
        callbacks=[MetricsFileCallback(run_dir / "metrics.jsonl"), progress_callback(), *callbacks],
        run_dir=run_dir,
        learning_rates=recipe.train.learning_rates.given(),  # per-part rates as optimizer groups
    )
    attach_tracking(trainer, recipe, run_dir)  # trackers get recipe, model, cards, git revision (rank 0)
    attach_generation_eval(trainer, recipe, run_dir, tokenizer)  # eval: suites at start / every N steps / end
    keep_training_precision(trainer, recipe, model_path)  # fp32 masters where no library keeps them
    run_preflight(recipe, trainer.model, run_dir)  # per-group trainable table; stops MoE runs that skip experts/GDN
    trainer.train(resume_from_checkpoint=find_resume_checkpoint(resume, run_dir / "checkpoints"))
    if trainer.preemption.requested is not None:
        return {**_write_summary(run_dir, recipe, trainer, started, stats), "preempted": trainer.preemption.requested}
    out = run_dir / ("model" if recipe.method.kind == "full" else "adapter")
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():  # save_model is rank-aware; these plain writes are not
        setup.save_preprocessing(out)  # processor (image/video settings), then the exact chat template trained with
        strip_machine_keys(out)  # is_local / local_files_only / local paths describe this machine, not the model
        RunDir(run_dir).write_run(RunRecord(base_model=recipe.model.name_or_path, base_path=model_path,
                                            method=recipe.method.kind, weights=out.name))
        plot_metrics(run_dir / "metrics.jsonl", run_dir / "metrics.png")
    summary = _write_summary(run_dir, recipe, trainer, started, stats)
    if recipe.export.merge and trainer.is_world_process_zero():  # one merged folder, written by rank 0
        from qwen35_tune.export.merge import merge_run

        merged = merge_run(run_dir, Path(recipe.export.merged_dir) if recipe.export.merged_dir else None)
        record_export(run_dir, summary, merged_dir=str(merged))  # summary.json names the merged folder
        if recipe.export.push_to_hub:  # after verification passed (merge_run raises otherwise)
            from qwen35_tune.export.publish import publish_folder

            publish_folder(merged, recipe.export.hub_repo_id, private=recipe.export.private)
            record_export(run_dir, summary, hub_repo_id=recipe.export.hub_repo_id)
    return summary
