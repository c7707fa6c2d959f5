"""The model side of every training stage (SFT now; DPO, GRPO, continued pretraining next) in one place and order.

A stage calls ``setup_model(recipe)`` and ``ModelSetup.load_weights(trainer_args)`` and nothing else for its model.
The work comes in two phases because the order is forced from outside:

1. ``setup_model`` — before the run directory is claimed and before the data build: the launch strategy against the
   method (QLoRA cannot be sharded), the attention implementation against this machine, the architecture and size
   against this machine (from the config alone, before any weight is downloaded); then the tokenizer and the
   processor, which the data build renders with. A recipe this machine cannot run touches no run directory.
2. ``load_weights`` — after the stage has built its trainer arguments: under DeepSpeed ZeRO-3 creating them switches
   ``from_pretrained`` to ``zero.Init`` (each rank keeps its shard) and marks what ``prepare_for_strategy`` reads.
   Then, in this order: load (per-rank placement; QLoRA quantizes the fused MoE experts while they load), the kernel
   check, Qwen3.5's fp32 parameters restored, the recipe checked against the loaded model, the remaining experts
   quantized, the freezing policy of a full fine-tune, ZeRO-3 leaf modules, and the peft config (built last: on
   4-bit experts peft needs their full names).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen35_tune.errors import UserError
from qwen35_tune.models.processor import NoProcessor
from qwen35_tune.registry import spec_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainableModel:
    """The weights as a stage hands them to its trainer, with the adapters to attach and the kernels it runs."""

    model: Any
    peft_config: Any  # peft LoraConfig; None for a full fine-tune
    kernels: Any  # doctor.KernelChoice: what each Gated DeltaNet slot and the attention run


@dataclass(frozen=True)
class ModelSetup:
    """What a stage knows about its model before the weights load (see the module docstring for the order)."""

    recipe: Any
    model_path: str  # what from_pretrained reads: a folder (tiny:// kinds built into the cache) or a hub id
    attention: str | None  # model.attn_implementation, checked for this machine (None: transformers' default)
    tokenizer: Any  # with the recipe's chat template, if it sets one
    processor: Any  # the vision processor, or a NoProcessor saying why there is none
    init: Any = None  # recipe.init_from.InitSource: model.init_from resolved (None: start from model.name_or_path)

    def load_weights(self, trainer_args) -> TrainableModel:
        """The model ready for the trainer. ``trainer_args`` (the stage's TrainingArguments) must exist first: under
        DeepSpeed ZeRO-3 their creation is what makes the load shard through ``zero.Init``."""
        from qwen35_tune.models.load import load_model
        from qwen35_tune.models.source_errors import checkpoint_source
        from qwen35_tune.train.distributed import prepare_for_strategy
        from qwen35_tune.train.peft_setup import build_lora_config

        # trainer_args is required for its side effect on transformers' DeepSpeed state, read by from_pretrained
        recipe = self.recipe
        if not Path(self.model_path).is_dir():  # a log file shows no download bar (qwen35_tune.terminal): say why
            log.info("loading the weights of %s (downloaded from the Hub first unless cached)", self.model_path)
        with checkpoint_source(self.model_path):  # e.g. config cached but weights not, offline
            model = load_model(self.model_path, recipe.model.dtype, recipe.model.revision, self.attention,
                               quantization_config=quantization_config(recipe))  # fmt: skip
        kernels = prepare_model(recipe, model, self.model_path)
        prepare_for_strategy(model)  # ZeRO-3: MoE blocks as leaf modules
        if self.init is not None and self.init.kind == "adapter":  # model.init_from: its adapter trains on
            from qwen35_tune.train.init_from import continue_adapter

            return TrainableModel(continue_adapter(model, self.init, trainer_args), None, kernels)
        return TrainableModel(model, build_lora_config(recipe, model), kernels)

    def save_preprocessing(self, folder: Path) -> None:
        """Write the processor (image/video settings trained with) and then the tokenizer (the exact chat template
        trained with, written last so the processor's copy cannot replace it) next to the trained weights."""
        if not isinstance(self.processor, NoProcessor):
            self.processor.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))


def setup_model(recipe) -> ModelSetup:
    """Phase 1: every check that needs no weights, then the tokenizer and processor the data build renders with."""
    import torch

    from qwen35_tune.doctor import check_attn_implementation
    from qwen35_tune.models.load import load_tokenizer, resolve_model_path
    from qwen35_tune.models.processor import processor_for_run
    from qwen35_tune.train.init_from import resolve_init
    from qwen35_tune.train.model_check import check_model_before_data
    from qwen35_tune.train.strategy_checks import check_runtime_strategy

    check_runtime_strategy(recipe)  # QLoRA under a ZeRO-3 / FSDP launch: exit 2 before any data or model loads
    attention = check_attn_implementation(recipe.model.attn_implementation, torch.cuda.is_available())
    init = resolve_init(recipe)  # model.init_from: an adapter to continue, or weights that are the base
    weights = init is not None and init.kind == "weights"
    model_path = str(init.folder) if weights else resolve_model_path(recipe.model.name_or_path)
    check_model_before_data(recipe, model_path)  # architecture and size against this machine, from the config
    template = Path(recipe.chat.template).read_text(encoding="utf-8") if recipe.chat.template else None
    # A continued stage renders with the tokenizer (and chat template) the earlier stage saved with its weights
    source = init.folder if init is not None and (init.folder / "tokenizer_config.json").is_file() else None
    tokenizer = load_tokenizer(str(source) if source else model_path, None if source or weights else
                               recipe.model.revision, template, key="model.init_from" if source else None)
    processor = processor_for_run(recipe, model_path, template)  # NoProcessor for text-only checkpoints
    return ModelSetup(recipe, model_path, attention, tokenizer, processor, init)


def quantization_config(recipe):
    """The recipe's ``BitsAndBytesConfig`` for QLoRA (``method.quantization``); None for the other methods."""
    if recipe.method.kind != "qlora":
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError("method.kind: qlora needs bitsandbytes: pip install 'qwen35-tune[bitsandbytes]'") from None
    import torch
    from transformers import BitsAndBytesConfig

    quant = recipe.method.quantization.model_dump()
    quant["bnb_4bit_compute_dtype"] = getattr(torch, quant["bnb_4bit_compute_dtype"])
    return BitsAndBytesConfig(**quant)


def check_recipe_fits_model(recipe, model) -> None:
    """Recipe settings that only the loaded model can refute, reported by recipe key before training starts."""
    spec = spec_for(model.config.model_type)
    coef = recipe.train.router_aux_loss_coef
    if coef and not spec.moe:
        raise UserError(f"train.router_aux_loss_coef: {model.config.model_type} is a dense model with no router "
                        f"(found {coef}); remove the key")
    if recipe.method.freeze and not spec.vision and {"vision", "projector"} & set(recipe.method.freeze):
        log.info("method.freeze: %s has no vision tower; freezing it is a no-op", model.config.model_type)


def prepare_model(recipe, model, model_path: str):
    """After loading, before the trainer: kernel check, fp32 parameters restored, recipe-vs-model checks, the fused
    experts in 4 bit for an MoE QLoRA, the freezing policy of a full fine-tune. Returns the kernel choice."""
    import torch

    from qwen35_tune import patches
    from qwen35_tune.doctor import check_kernels
    from qwen35_tune.models.fp32_params import restore_fp32_params
    from qwen35_tune.train.freeze import apply_freeze
    from qwen35_tune.train.param_groups import effective_freeze

    spec = spec_for(model.config.model_type)
    try:
        patches.check_model_setup_names()
    except patches.UpstreamChanged as exc:
        low, high = patches.LOADED_MODEL_NAMES_VERSIONS
        raise UserError(f"{exc}; install transformers>={low},<{high}") from None
    attention = patches.loaded_attn_implementation(model.config) or recipe.model.attn_implementation  # as loaded
    kernels = check_kernels(model.config.model_type, attention, recipe.model.allow_slow_kernels,
                            on_cuda=torch.cuda.is_available())  # fmt: skip
    restore_fp32_params(model, model_path, spec.fp32_params, recipe.model.revision)
    check_recipe_fits_model(recipe, model)
    if recipe.method.kind == "qlora" and spec.moe:  # bitsandbytes' loader leaves the fused 3-D experts in bf16
        from qwen35_tune.models.quantize import quantize_moe_experts

        quant = recipe.method.quantization
        quantize_moe_experts(model, quant.bnb_4bit_quant_type, quant.bnb_4bit_use_double_quant)
    if recipe.method.kind == "full":
        apply_freeze(model, effective_freeze(recipe))  # a part given its own rate trains
    return kernels
