"""Reinforcement learning with verifiable rewards (``stage: grpo``): one top-to-bottom function over TRL's
GRPOTrainer, with our prompts, our rewards and the same run directory, checks and export as SFT (train/sft.py)."""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.rundir import RunDir
from qwen35_tune.train.callbacks import MetricsFileCallback, read_metrics
from qwen35_tune.train.distributed import main_process_dir, world_size
from qwen35_tune.train.eval_callback import attach_generation_eval
from qwen35_tune.train.guards import check_recipe_runnable, storage_errors
from qwen35_tune.train.model_setup import ModelSetup, setup_model
from qwen35_tune.train.precision import keep_training_precision
from qwen35_tune.train.preflight import run_preflight
from qwen35_tune.train.resume import find_resume_checkpoint
from qwen35_tune.train.run_claim import claim_run_dir
from qwen35_tune.train.run_end import export_run, save_trained, write_summary
from qwen35_tune.train.tracking import attach_tracking
from qwen35_tune.train.trainer_args import build_config, shared_trainer_kwargs

log = logging.getLogger(__name__)

def check_generation_backend(recipe) -> None:
    """``grpo.use_vllm`` needs CUDA and the vllm package: say so before any data or weights load."""
    import torch

    if not recipe.grpo.use_vllm:
        return
    if not torch.cuda.is_available():
        raise UserError("grpo.use_vllm: vLLM generates on CUDA GPUs and this machine has none; set "
                        "grpo.use_vllm: false to generate with transformers (the default)")
    if importlib.util.find_spec("vllm") is None:
        raise UserError("grpo.use_vllm: vLLM is not installed here: pip install vllm (a version TRL supports: see "
                        "its docs), or set grpo.use_vllm: false to generate with transformers")


def check_generation_round(recipe, accumulation: int, processes: int) -> None:
    """Each generation round must hold whole groups of ``grpo.num_generations`` completions; said in recipe keys."""
    extra = recipe.grpo.model_extra or {}
    if "generation_batch_size" in extra or "steps_per_generation" in extra:
        return  # GRPOConfig checks those itself
    per_device, groups = recipe.train.per_device_train_batch_size, recipe.grpo.num_generations
    rows = per_device * accumulation * processes
    if rows % groups:
        raise UserError(f"grpo.num_generations: {groups} completions per prompt must divide the {rows} completions "
                        f"of a generation round (train.per_device_train_batch_size {per_device} x gradient "
                        f"accumulation {accumulation} x {processes} processes); set train.global_batch_size to a "
                        f"multiple of {groups}, or change num_generations")


def build_grpo_config(recipe, run_dir: Path, reward_weights: list[float]):
    """GRPOConfig from ``train`` (TrainingArguments names), ``grpo`` (its own names) and the reward weights."""
    from trl import GRPOConfig

    kwargs = shared_trainer_kwargs(recipe, run_dir, skip={"max_length"})  # bounds prompt + completion here
    kwargs.update(recipe.grpo.config_kwargs())
    # The rewards read the rows' check and origin columns, which TRL would otherwise drop.
    kwargs.update(remove_unused_columns=False, reward_weights=reward_weights)
    check_generation_round(recipe, kwargs["gradient_accumulation_steps"], world_size())
    return build_config(GRPOConfig, kwargs, "grpo / train")


def run_grpo(recipe, run_dir: Path, callbacks: tuple = (), resume: str | None = None,
             overwrite: bool = False) -> dict:
    """Train the recipe's GRPO stage into ``run_dir`` and return the run summary (as ``train.sft.run_sft``: the
    same checks before any data or weights, run-directory lock and resume rules, preemption, merge and export)."""
    run_dir = Path(run_dir)
    check_recipe_runnable(recipe)
    check_generation_backend(recipe)
    setup = setup_model(recipe)
    with storage_errors(run_dir), claim_run_dir(recipe, run_dir, resume, overwrite, main_process_dir(run_dir)):
        return _train_grpo(recipe, setup, run_dir, callbacks, resume)


def _train_grpo(recipe, setup: ModelSetup, run_dir: Path, callbacks: tuple, resume: str | None) -> dict:
    """The run itself, in a run directory this process may write (see ``run_grpo``)."""
    from trl.trainer.callbacks import RichProgressCallback

    from qwen35_tune.data.prompt_build import build_prompt_datasets
    from qwen35_tune.train.grpo_trainer import QwenGRPOTrainer
    from qwen35_tune.train.rewards import build_reward_functions

    started = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    writes = main_process_dir(run_dir)  # None on other ranks: they build the same data but write nothing
    if writes:
        RunDir(run_dir).write_recipe(recipe)
    tokenizer = setup.tokenizer
    train_ds, eval_ds, stats = build_prompt_datasets(recipe, tokenizer, writes)
    log.info("data: %d training prompts, %d eval prompts", stats["train_rows"], stats["eval_rows"])
    kinds = {json.loads(check)["kind"] for ds in (train_ds, eval_ds) if ds is not None for check in ds["check"]}
    rewards, weights = build_reward_functions(recipe, kinds)
    grpo_config = build_grpo_config(recipe, run_dir, weights)  # before the weights: under ZeRO-3 the load shards
    loaded = setup.load_weights(grpo_config)
    trainer = QwenGRPOTrainer(
        model=loaded.model,
        reward_funcs=rewards,
        args=grpo_config,
        train_dataset=train_ds,
        eval_dataset=eval_ds if recipe.train.eval_strategy != "no" else None,
        processing_class=tokenizer,  # prompts arrive rendered as text (the chat template applied by us)
        peft_config=loaded.peft_config,
        callbacks=[MetricsFileCallback(run_dir / "metrics.jsonl"), RichProgressCallback(), *callbacks],
        run_dir=run_dir,
        learning_rates=recipe.train.learning_rates.given(),
        completions_file=RunDir(writes).completions_jsonl if writes else None,
    )
    for reward in rewards:  # a completion is finished when it ends in one of the ids generation stops at
        reward.eos_ids = set(trainer.eos_token_ids)
    attach_tracking(trainer, recipe, run_dir)
    attach_generation_eval(trainer, recipe, run_dir, tokenizer)
    keep_training_precision(trainer, recipe, setup.model_path)
    run_preflight(recipe, trainer.model, run_dir)  # per-group trainable table; stops MoE runs that skip experts/GDN
    trainer.train(resume_from_checkpoint=find_resume_checkpoint(resume, run_dir / "checkpoints"))
    if trainer.preemption.requested is not None:
        summary = write_summary(run_dir, recipe, trainer, started, stats, reward_summary(recipe, run_dir))
        return {**summary, "preempted": trainer.preemption.requested}
    save_trained(trainer, recipe, setup, run_dir)
    summary = write_summary(run_dir, recipe, trainer, started, stats, reward_summary(recipe, run_dir))
    return export_run(recipe, run_dir, trainer, summary)


def reward_summary(recipe, run_dir: Path) -> dict:
    """The stage and, per reward, its mean at the first and the last logged step (from metrics.jsonl)."""
    metrics = read_metrics(run_dir / "metrics.jsonl")
    rewards = {}
    for spec in recipe.rewards:
        means = [m[f"rewards/{spec.label}/mean"] for m in metrics if m.get(f"rewards/{spec.label}/mean") is not None]
        rewards[spec.label] = {"weight": spec.weight, "first": means[0] if means else None,
                               "final": means[-1] if means else None}
    totals = [m["reward"] for m in metrics if m.get("reward") is not None]
    return {"stage": "grpo", "rewards": rewards, "first_reward": totals[0] if totals else None,
            "final_reward": totals[-1] if totals else None}
