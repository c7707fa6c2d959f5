"""QLoRA merge targets: merge the adapter into the original 16-bit base, or into the 4-bit base it was trained on.

A QLoRA adapter learned to correct the *dequantised* 4-bit weights, so merging it into the original 16-bit weights
changes the model by the quantisation error as well. Measured on the tiny dense model (benchmarks/
qlora_merge_targets.py, nf4 + double quant, 10 steps): against the trained 4-bit+adapter model's logits, the merge
into the dequantised base differs by max 5e-6 (fp32 compute; 5e-2 with bf16 compute, i.e. compute rounding only)
with 100% argmax agreement, the merge into the original base by max 1.7 (89-93% argmax agreement) -- a third of the
adapter's own effect (max 5.2). So ``dequantized`` is the default (``export.qlora_merge_base``); ``original`` keeps
the 16-bit precision of the weights for those who accept that the merged model is not the one trained.
The dequantised weights are rebuilt tensor by tensor while streaming (bitsandbytes' own quantize -> dequantize round
trip, which is deterministic, with the settings of the training run), so the export stays shard-bounded.
On the MoE the routed experts were quantised as whole fused stacks (models/quantize.py), while the checkpoint stores
them per expert: :class:`ExpertStacks` rebuilds one layer's stack from its per-expert tensors, round-trips it the same
way and hands the pieces back (bounded by one layer's experts, not the model).
"""

from __future__ import annotations

import logging
import re
import typing
from dataclasses import dataclass
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.recipe.schema import ExportSection, QuantSection
from qwen35_tune.registry import FUSED_EXPERT_PIECES
from qwen35_tune.rundir import RunDir

log = logging.getLogger(__name__)

QLORA_BASES = typing.get_args(ExportSection.model_fields["qlora_merge_base"].annotation)


@dataclass(frozen=True)
class QuantSpec:
    """How bitsandbytes quantised one weight during training (read from its Params4bit)."""

    blocksize: int
    quant_type: str
    compress_statistics: bool
    quant_storage: object


def bnb_config(quant: QuantSection):
    """BitsAndBytesConfig from the run's ``method.quantization`` (its keys are BitsAndBytesConfig's arguments)."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError("merging a qlora run needs bitsandbytes: pip install 'qwen35-tune[bitsandbytes]'") from None
    import torch
    from transformers import BitsAndBytesConfig

    settings = quant.model_dump()
    settings["bnb_4bit_compute_dtype"] = getattr(torch, quant.bnb_4bit_compute_dtype)
    return BitsAndBytesConfig(**settings)


def load_dtype(dtype: str, base_path: Path):
    """The dtype training loaded the base in, before quantising: model.dtype, or the checkpoint's own for 'auto'."""
    import torch

    from qwen35_tune.models.load import load_config

    if dtype == "auto":  # on CUDA 'auto' is the checkpoint's bf16; on CPU fp32 (a tiny fp32 checkpoint either way)
        stored = getattr(load_config(str(base_path)), "dtype", None) or torch.float32
        return getattr(torch, stored) if isinstance(stored, str) else stored
    return getattr(torch, dtype)


def quantized_weights(base_path: Path, config) -> dict[str, QuantSpec]:
    """Checkpoint key -> QuantSpec of every weight transformers quantises, found on a meta-device skeleton.

    transformers' own quantizer picks the modules (it skips lm_head, fp32-kept modules and its other defaults), so
    the set is exactly the training model's without loading any weight.
    """
    import bitsandbytes as bnb
    import torch
    from transformers.quantizers import AutoHfQuantizer

    from qwen35_tune.export.adapter_map import _candidates
    from qwen35_tune.export.checkpoint import open_checkpoint
    from qwen35_tune.models.load import load_config, model_class

    model_config = load_config(str(base_path))
    with torch.device("meta"):
        skeleton = model_class(model_config)(model_config)
    AutoHfQuantizer.from_config(config, pre_quantized=False).preprocess_model(skeleton, device_map=None)
    keys = open_checkpoint(base_path).weight_map
    out: dict[str, QuantSpec] = {}
    for name, module in skeleton.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            key = next((c for c in _candidates(f"{name}.weight") if c in keys), None)
            if key is None:
                raise UserError(f"quantised module '{name}' has no weight in {base_path} (wrong --base?)")
            w = module.weight
            out[key] = QuantSpec(w.blocksize, w.quant_type, w.compress_statistics, w.quant_storage)
    return out


_EXPERT_KEY = re.compile(r"^(?P<head>.+\.experts)\.(?P<expert>\d+)\.(?P<piece>gate_proj|up_proj|down_proj)\.weight$")
_FUSED_EXPERT_KEY = re.compile(r"^.+\.experts\.(gate_up_proj|down_proj)$")


class ExpertStacks:
    """The routed-expert weights as QLoRA training saw them: each fused stack round-tripped through 4 bit.

    Training quantised ``mlp.experts.gate_up_proj`` [E, 2I, H] and ``down_proj`` [E, H, I] as whole tensors with
    bitsandbytes' ``replace_parameter_4bit`` (block absmax over the flattened stack and, with double quant, statistics
    over the whole stack), so quantising each per-expert checkpoint tensor on its own would give different weights.
    """

    def __init__(self, base_path: Path, quant_type: str, double_quant: bool, dtype):
        from qwen35_tune.export.checkpoint import open_checkpoint

        self.checkpoint = open_checkpoint(base_path)
        self.quant_type, self.double_quant, self.dtype = quant_type, double_quant, dtype
        per_expert: dict[tuple[str, str], dict[int, dict[str, str]]] = {}
        self.fused: set[str] = set()
        for key in self.checkpoint.weight_map:
            if _FUSED_EXPERT_KEY.match(key):
                self.fused.add(key)
            elif match := _EXPERT_KEY.match(key):
                stack = "down_proj" if match["piece"] == "down_proj" else "gate_up_proj"
                per_expert.setdefault((match["head"], stack), {}).setdefault(int(match["expert"]), {})[
                    match["piece"]] = key
        # group -> [[keys of expert 0 in fused row order], [keys of expert 1], ...]
        self.groups = {group: [[experts[e][p] for p in FUSED_EXPERT_PIECES[group[1]]] for e in sorted(experts)]
                       for group, experts in per_expert.items()}
        self.group_of = {key: group for group, rows in self.groups.items() for keys in rows for key in keys}
        self._ready: dict[tuple[str, str], dict[str, object]] = {}

    def __len__(self) -> int:
        return len(self.groups) + len(self.fused)

    def _round_trip(self, stack):
        from bitsandbytes.functional import dequantize_4bit, quantize_4bit

        packed, state = quantize_4bit(stack.to(self.dtype).contiguous(), compress_statistics=self.double_quant,
                                      quant_type=self.quant_type)  # blocksize: bitsandbytes' default, as in training
        return dequantize_4bit(packed, state)

    def _build(self, group) -> dict[str, object]:
        import torch
        from safetensors import safe_open

        handles: dict[str, object] = {}

        def read(key):
            shard = self.checkpoint.weight_map[key]
            if shard not in handles:
                handles[shard] = safe_open(self.checkpoint.path / shard, "pt")
            return handles[shard].get_tensor(key)

        rows = self.groups[group]
        pieces = [[read(key) for key in keys] for keys in rows]
        restored = self._round_trip(torch.stack([torch.cat(tensors) for tensors in pieces]))
        out = {}
        for expert, (keys, tensors) in enumerate(zip(rows, pieces, strict=True)):
            start = 0
            for key, tensor in zip(keys, tensors, strict=True):
                out[key] = restored[expert, start:start + tensor.shape[0]].clone()
                start += tensor.shape[0]
        return out

    def __call__(self, key: str, tensor):
        if key in self.fused:  # a checkpoint that stores the stacks fused already
            return self._round_trip(tensor)
        group = self.group_of.get(key)
        if group is None:
            return None
        if group not in self._ready:
            self._ready[group] = self._build(group)
        pieces = self._ready[group]
        weight = pieces.pop(key)
        if not pieces:
            del self._ready[group]
        return weight


def expert_stacks_for(base_path: Path, quant: QuantSection, dtype: str) -> ExpertStacks | None:
    """The expert round trip when training quantised the experts (QLoRA on an MoE model), else None."""
    from qwen35_tune.models.load import load_config
    from qwen35_tune.registry import spec_for

    if not spec_for(load_config(str(base_path)).model_type).moe:
        return None
    stacks = ExpertStacks(base_path, quant.bnb_4bit_quant_type, quant.bnb_4bit_use_double_quant,
                          load_dtype(dtype, base_path))
    return stacks if len(stacks) else None


class Dequantizer:
    """``dequantizer(key, tensor)``: the weight as the 4-bit training model saw it, or None if it was not quantised.

    ``quant`` and ``dtype``: the run's ``method.quantization`` and ``model.dtype`` (``RunDir.view``)."""

    def __init__(self, base_path: Path, quant: QuantSection, dtype: str):
        self.specs = quantized_weights(base_path, bnb_config(quant))
        self.dtype = load_dtype(dtype, base_path)
        self.experts = expert_stacks_for(base_path, quant, dtype)

    def __call__(self, key: str, tensor):
        from bitsandbytes.functional import dequantize_4bit, quantize_4bit

        spec = self.specs.get(key)
        if spec is None:
            return self.experts(key, tensor) if self.experts is not None else None
        packed, state = quantize_4bit(tensor.to(self.dtype), blocksize=spec.blocksize, quant_type=spec.quant_type,
                                      compress_statistics=spec.compress_statistics, quant_storage=spec.quant_storage)
        return dequantize_4bit(packed, state)


def merge_target(export: ExportSection, requested: str | None) -> str:
    """``requested`` (CLI), else the recipe's ``export.qlora_merge_base`` (its default: the measured better one)."""
    choice = requested or export.qlora_merge_base
    if choice not in QLORA_BASES:
        raise UserError(f"qlora merge base '{choice}' is not one of {', '.join(QLORA_BASES)}")
    return choice


def quantized_reference(run: RunDir, base_path: Path):
    """The model exactly as QLoRA trained it: the base loaded in 4 bit with the run's settings, plus the adapter."""
    from peft import PeftModel

    from qwen35_tune.models.load import load_model
    from qwen35_tune.registry import spec_for

    quant = run.view.quantization
    dtype = str(load_dtype(run.view.dtype, base_path)).removeprefix("torch.")
    model = load_model(str(base_path), dtype, quantization_config=bnb_config(quant))
    _same_cpu_path_as_training(model)
    adapter = run.weights
    config = None
    if spec_for(model.config.model_type).moe:  # the experts in 4 bit, as preflight did in training
        from peft import PeftConfig

        from qwen35_tune.models.quantize import parameter_targets_for, quantize_moe_experts

        quantize_moe_experts(model, quant.bnb_4bit_quant_type, quant.bnb_4bit_use_double_quant)
        config = PeftConfig.from_pretrained(adapter)
        if config.target_parameters:  # suffixes match nothing on parametrized modules (see parameter_targets_for)
            config.target_parameters = list(parameter_targets_for(model, tuple(config.target_parameters)))
    return PeftModel.from_pretrained(model, adapter, config=config).eval()


def _same_cpu_path_as_training(model) -> None:
    """Keep bitsandbytes' CPU eval path equal to the training one (bitsandbytes 0.50: on AVX512-BF16 CPUs an
    eval-mode Linear4bit repacks its weight, asserting out_features % 32 == 0, which small projections fail)."""
    from bitsandbytes.nn import Linear4bit

    for module in model.modules():
        if isinstance(module, Linear4bit) and hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
