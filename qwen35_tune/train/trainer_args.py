"""The trainer arguments every stage shares (SFTConfig, GRPOConfig: both TRL configs over TrainingArguments), from the
recipe's ``train`` section and this machine; each stage adds its own and builds its config class with them."""

from __future__ import annotations

from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.models.load import resolve_dtype
from qwen35_tune.train.distributed import gradient_accumulation
from qwen35_tune.train.launch_precision import enforce_recipe_precision

# Recipe `train` keys that are ours or need translating; the rest are TrainingArguments / SFTConfig names.
NOT_TRAINER_KEYS = {"extra", "bf16", "packing", "packing_length", "gradient_checkpointing", "learning_rates",
                    "global_batch_size"}


def shared_trainer_kwargs(recipe, run_dir: Path, skip: set[str] = frozenset()) -> dict:
    """Keyword arguments for a TRL config: the ``train`` keys (less ``NOT_TRAINER_KEYS`` and ``skip``), then what the
    run sets itself (output folder, seed, precision, trackers, devices, accumulation), then ``train.extra``."""
    import torch

    train = recipe.train
    kwargs = {k: v for k, v in train.model_dump().items() if k not in NOT_TRAINER_KEYS | set(skip)}
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
        use_cpu=not on_cuda,
        # transformers 5.x name; `gradient_checkpointing` (our recipe key) is its deprecated alias there
        activation_checkpointing=train.gradient_checkpointing,
        gradient_accumulation_steps=gradient_accumulation(train),  # derived from train.global_batch_size if given
        **train.extra,
    )
    # Loss = summed token losses / real target tokens of the whole optimizer step (all micro-batches and ranks), so
    # N ranks x G accumulation steps train like one process with the same global batch. transformers' default;
    # pinned because tests/smoke/test_distributed_cpu.py relies on it (train.extra may still turn it off).
    kwargs.setdefault("average_tokens_across_devices", True)
    enforce_recipe_precision(bf16, bool(kwargs.get("fp16")))  # a launch config's mixed_precision must not override
    return kwargs


def build_config(config_cls, kwargs: dict, where: str, hint: str = ""):
    """``config_cls(**kwargs)``; its refusal is a UserError naming the recipe section(s) that set it (``where``)."""
    try:
        return config_cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: the trainer rejected these settings{hint}: {exc}") from None
