"""Training precision: fp32 master weights where no library keeps them, and Qwen3.5's fp32 parameters after DeepSpeed.

fp32 master weights for every parameter the optimizer updates directly, so small updates are not rounded away.

AdamW applied to bf16 weights rounds each step's result to bf16's 8-bit mantissa: at lr 1e-5 almost every update is
smaller than half a bf16 step of the weight and vanishes (tiny model, 10 steps: 2.28% of weight elements changed,
against 75.5% with fp32 weights). Who keeps master copies:

- DeepSpeed with ``bf16`` enabled keeps fp32 partitions of the trainable parameters in its optimizer (ZeRO 1-3),
  and accelerate's FSDP2 upcasts trainable parameters to fp32 under mixed precision: nothing to add there. FSDP2
  casts every unit to the compute dtype, so Qwen3.5's fp32 parameters compute from bf16 copies there (logged).
- A single process or plain DDP trains the parameters as they are. Here every trainable bf16/fp16 parameter is made
  fp32 and the compute stays bf16 under autocast (``train.bf16``, on by default for bf16 models): the Trainer's own
  mixed-precision recipe. It costs what an optimizer with fp32 master copies costs (4 B fp32 weight + 4 B fp32
  gradient against 2 + 2 + 4 B), accumulates gradients across micro-batches in fp32, and needs no other library.

This covers full fine-tunes, modules trained in full next to LoRA (``modules_to_save``: router, embeddings) and
QLoRA adapters, which TRL casts to bf16 for quantized models (peft's own adapters are already fp32:
``autocast_adapter_dtype``). At the end of training the parameters go back to the dtype they were loaded in, so the
saved model or adapter is stored like before; intermediate checkpoints keep the fp32 masters, so a resume continues
exactly. A half-precision model trained without mixed precision (``train.bf16: false``) has no master copies to
keep and is refused with the fix named.

DeepSpeed ZeRO-1/2 casts every parameter to bf16 when the engine starts; the frozen fp32 ones (``A_log``, gated norm
weight under LoRA) are read back from the checkpoint at train begin (models/fp32_params.py says what cannot be).
"""

from __future__ import annotations

import logging

from transformers import TrainerCallback

from qwen35_tune.errors import UserError

log = logging.getLogger(__name__)


def half_trainable(model) -> list[tuple[str, object]]:
    """(name, parameter) of every trainable parameter stored in bf16 or fp16."""
    import torch

    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.dtype in (torch.bfloat16,
                                                                                             torch.float16)]


class _BackToLoadDtype(TrainerCallback):
    """At the end of training, store the upcast parameters in their load dtype again (for the final save)."""

    def __init__(self, params: list[tuple[object, object]]):
        self.params = params

    def on_train_end(self, args, state, control, **kwargs):
        for param, dtype in self.params:
            param.data = param.data.to(dtype)


def keep_fp32_master_weights(trainer, load_dtype) -> int:
    """Make the trainer's half-precision trainable parameters fp32 masters where no library keeps them; returns how
    many. Call after the trainer (and its peft wrapping) exists and before ``train()`` builds the optimizer."""
    import torch

    if trainer.is_fsdp_enabled:  # accelerate's FSDP2 upcasts trainable parameters under its mixed precision
        return 0
    half = half_trainable(trainer.model)
    if not half:
        return 0
    autocast = trainer.args.bf16 or trainer.args.fp16  # under DeepSpeed this also turns its bf16 (and masters) on
    if not autocast and load_dtype in (torch.bfloat16, torch.float16):
        name = str(load_dtype).removeprefix("torch.")
        raise UserError(f"train.bf16: false with model.dtype {name} would update {name} weights directly, with no "
                        f"fp32 master copy: updates smaller than {name}'s precision are lost (at lr 1e-5 most of "
                        "them). Set train.bf16: true (bf16 compute over fp32 master weights) or model.dtype: float32")
    if trainer.is_deepspeed_enabled:  # bf16 on: its ZeRO optimizer keeps fp32 partitions of what trains
        return 0
    upcast = [(param, param.dtype) for _, param in half]
    for param, _ in upcast:
        param.data = param.data.float()
    trainer.add_callback(_BackToLoadDtype(upcast))
    count = sum(param.numel() for param, _ in upcast)
    log.info("fp32 master weights for %d trainable tensors (%.1fM parameters; %s compute under autocast), stored in "
             "their load dtype again after training", len(upcast), count / 1e6,
             "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32")  # fmt: skip
    return len(upcast)


class _Fp32ParamsAfterEngine(TrainerCallback):
    """At train begin (after accelerate built the DeepSpeed engine): read frozen fp32 parameters back in fp32."""

    def __init__(self, model_path: str, suffixes: tuple[str, ...], revision: str | None):
        self.model_path, self.suffixes, self.revision = model_path, suffixes, revision

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from qwen35_tune.models.fp32_params import restore_after_engine

        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # checkpoint names, not peft's
        restore_after_engine(base, self.model_path, self.suffixes, self.revision)


def keep_training_precision(trainer, recipe, model_path: str) -> None:
    """fp32 masters outside DeepSpeed/FSDP; under DeepSpeed, frozen fp32 parameters read back after its bf16 cast."""
    from qwen35_tune.models.load import resolve_dtype
    from qwen35_tune.registry import spec_for

    keep_fp32_master_weights(trainer, resolve_dtype(recipe.model.dtype))
    suffixes = spec_for(trainer.model.config.model_type).fp32_params
    if trainer.is_deepspeed_enabled:
        trainer.add_callback(_Fp32ParamsAfterEngine(model_path, suffixes, recipe.model.revision))
    elif trainer.is_fsdp_enabled and (trainer.args.bf16 or trainer.args.fp16):
        half = "bf16" if trainer.args.bf16 else "fp16"
        log.warning("FSDP computes every unit in %s, Qwen3.5's fp32 parameters (%s) included: they compute from %s "
                    "copies (masters stay fp32); a merged LoRA export still has the checkpoint's fp32 values", half,
                    ", ".join(suffixes), half)  # fmt: skip
