"""Reinforcement learning with verifiable rewards (``stage: grpo``): one top-to-bottom function over TRL's
GRPOTrainer, with our prompts, our rewards and the same run directory, checks and export as SFT (train/sft.py)."""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.recipe.grpo_section import grpo_settings
from qwen35_tune.rundir import RunDir
from qwen35_tune.train.callbacks import read_metrics
from qwen35_tune.train.distributed import world_size
from qwen35_tune.train.model_setup import ModelSetup
from qwen35_tune.train.stage import (
    build_config,
    export_trained,
    open_run_dir,
    run_claimed,
    save_trained,
    start_training,
    trainer_arguments,
    trainer_wiring,
    write_summary,
)

log = logging.getLogger(__name__)


def check_generation_backend(recipe) -> None:
    """``grpo.use_vllm`` needs the vllm package and CUDA: say so at the key before any data or weights load."""
    import torch

    if not grpo_settings(recipe).use_vllm:
        return
    if importlib.util.find_spec("vllm") is None:
        raise UserError("grpo.use_vllm: vLLM is not installed here: pip install vllm (a version TRL supports: see "
                        "its docs), or set grpo.use_vllm: false to generate with transformers (the default)")
    if not torch.cuda.is_available():
        raise UserError("grpo.use_vllm: vLLM generates on CUDA GPUs and this machine has none; set "
                        "grpo.use_vllm: false to generate with transformers (the default)")


def check_generation_round(recipe, accumulation: int, processes: int) -> None:
    """Each generation round must hold whole groups of ``grpo.num_generations`` completions; said in recipe keys."""
    grpo = grpo_settings(recipe)
    extra = grpo.model_extra or {}
    if "generation_batch_size" in extra or "steps_per_generation" in extra:
        return  # GRPOConfig checks those itself
    per_device, groups = recipe.train.per_device_train_batch_size, grpo.num_generations
    rows = per_device * accumulation * processes
    if rows % groups:
        raise UserError(f"grpo.num_generations: {groups} completions per prompt must divide the {rows} completions "
                        f"of a generation round (train.per_device_train_batch_size {per_device} x gradient "
                        f"accumulation {accumulation} x {processes} processes); set train.global_batch_size to a "
                        f"multiple of {groups}, or change num_generations")


def check_eval_round(recipe, eval_strategy: str, eval_batch: int, processes: int) -> None:
    """Evaluation samples whole groups too: the eval batch of all processes must hold whole groups (recipe keys)."""
    grpo = grpo_settings(recipe)
    groups = (grpo.model_extra or {}).get("num_generations_eval") or grpo.num_generations
    if eval_strategy != "no" and (eval_batch * processes) % groups:
        raise UserError(f"train.per_device_eval_batch_size: evaluating samples {groups} completions per held-out "
                        f"prompt, and {eval_batch} per device x {processes} processes is not a multiple of it; set "
                        f"train.per_device_eval_batch_size to a multiple of {groups} (or train.eval_strategy: no)")


def build_grpo_config(recipe, run_dir: Path, reward_weights: list[float], eval_rows: int | None = None):
    """GRPOConfig from ``train`` (TrainingArguments names), ``grpo`` (its own names) and the reward weights.
    ``eval_rows``: prompts the data build held out (None: whether the recipe holds any out), for the eval schedule
    (evaluating a GRPO run samples completions for the held-out prompts and logs their rewards)."""
    from trl import GRPOConfig

    kwargs = trainer_arguments(recipe, run_dir, eval_rows)  # what every stage's config takes (train/stage.py)
    kwargs.pop("max_length", None)  # GRPOConfig has none: train.max_length bounds prompt + completion (data build)
    kwargs.update(grpo_settings(recipe).config_kwargs())
    # The rewards read the rows' check and origin columns, which TRL would otherwise drop.
    kwargs.update(remove_unused_columns=False, reward_weights=reward_weights)
    check_generation_round(recipe, kwargs["gradient_accumulation_steps"], world_size())
    check_eval_round(recipe, kwargs["eval_strategy"], kwargs["per_device_eval_batch_size"], world_size())
    return build_config(GRPOConfig, kwargs)


def run_grpo(recipe, run_dir: Path, callbacks: tuple = (), resume: str | None = None,
             overwrite: bool = False) -> dict:  # fmt: skip
    """Train the recipe's GRPO stage into ``run_dir`` and return the run summary; merges when ``export.merge`` is on.

    The arguments are ``train.sft.run_sft``'s; the checks before any data or weights and the claimed run directory
    are the same (``train.stage.run_claimed``), with the generation backend checked first.
    """
    check_generation_backend(recipe)
    return run_claimed(recipe, run_dir, _train_grpo, callbacks, resume, overwrite)


def _train_grpo(recipe, setup: ModelSetup, run_dir: Path, callbacks: tuple, resume: str | None) -> dict:
    """The run itself, in a run directory this process may write (see ``run_grpo``)."""
    from qwen35_tune.data.prompt_build import build_prompt_datasets
    from qwen35_tune.train.grpo_trainer import QwenGRPOTrainer
    from qwen35_tune.train.rewards import build_reward_functions

    started = time.time()
    writes = open_run_dir(recipe, run_dir)  # None on other ranks: they build the same data but write nothing
    tokenizer = setup.tokenizer
    train_ds, eval_ds, stats = build_prompt_datasets(recipe, tokenizer, writes)
    log.info("data: %d training prompts, %d eval prompts", stats["train_rows"], stats["eval_rows"])
    kinds = {json.loads(check)["kind"] for ds in (train_ds, eval_ds) if ds is not None for check in ds["check"]}
    rewards, weights = build_reward_functions(recipe, kinds)
    eval_rows = len(eval_ds) if eval_ds is not None else 0  # none: nothing to evaluate (train/eval_schedule.py)
    grpo_config = build_grpo_config(recipe, run_dir, weights, eval_rows)  # before the weights (ZeRO-3 shards the load)
    loaded = setup.load_weights(grpo_config)  # model.init_from's adapter continues here (train/init_from.py)
    trainer = QwenGRPOTrainer(
        model=loaded.model,
        reward_funcs=rewards,
        args=grpo_config,
        train_dataset=train_ds,
        eval_dataset=eval_ds if grpo_config.eval_strategy != "no" else None,
        processing_class=tokenizer,  # prompts arrive rendered as text (the chat template applied by us)
        peft_config=loaded.peft_config,
        **trainer_wiring(recipe, run_dir, callbacks),
        completions_file=RunDir(writes).completions_jsonl if writes else None,
    )
    for reward in rewards:  # a completion is finished when it ends in one of the ids generation stops at
        reward.eos_ids = set(trainer.eos_token_ids)
    start_training(trainer, recipe, setup, run_dir, resume)
    if trainer.preemption.requested is not None:
        summary = write_summary(run_dir, recipe, trainer, started, stats, **reward_summary(recipe, run_dir))
        return {**summary, "preempted": trainer.preemption.requested}
    save_trained(trainer, recipe, setup, run_dir)  # adapter/ or model/, run.json (with the chain of stages)
    summary = write_summary(run_dir, recipe, trainer, started, stats, **reward_summary(recipe, run_dir))
    return export_trained(recipe, run_dir, trainer, summary)  # export.merge: merged/, verified (and published)


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
