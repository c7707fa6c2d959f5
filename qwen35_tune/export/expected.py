"""The tensors a correct export must hold, computed independently of how export/merge.py computes them.

merge.py maps adapter keys to checkpoint names itself (adapter_map.py) and applies LoRA/DoRA/expert deltas by hand.
Here, on the loaded reference model (what training trained), peft computes every change (``get_delta_weight``; DoRA
through its own ``merge_safe``), the weight it changes is the one training computed with (the base in fp32, or
bitsandbytes' dequantised 4-bit weight for QLoRA), and transformers maps model parameters back to checkpoint names
(``revert_weight_conversion``, what ``save_pretrained`` uses: per-expert tensors, ``language_model`` prefixes).
A touched tensor is right when it is ``(W.float() + ΔW).to(dtype)`` to within one rounding step of ``dtype``; every
other tensor must be byte-identical to the base.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qwen35_tune.export.checkpoint import open_checkpoint, raw_bytes

FP32_NOISE = 1e-6  # relative slack for fp32 arithmetic done in another order (matmul sums), far below any corruption


@dataclass(frozen=True)
class Target:
    """What one model parameter must become, computed on demand so memory holds one parameter at a time: ``kind``
    'value' (the whole tensor, fp32), 'delta' (added to the base checkpoint's tensors: QLoRA into the original base)
    or 'merge' (a function of the base checkpoint's tensor: DoRA into the original base; ``probe`` gives the shape)."""

    kind: str
    compute: Callable
    probe: Callable | None = None

    def tensor(self):
        """The value or delta (the probe for 'merge'), to map onto checkpoint keys."""
        return (self.probe if self.kind == "merge" else self.compute)()


def _owner(name: str) -> str:
    return re.sub(r"\.base_layer(?=\.|$)", "", name)


def _weight_seen(module, param_name: str):
    """The weight training computed with, in fp32: 4-bit weights dequantised as bitsandbytes does in the forward."""
    weight = getattr(module, param_name)
    if param_name == "weight" and type(weight).__name__ == "Params4bit":
        from peft.utils.integrations import dequantize_bnb_weight

        weight = dequantize_bnb_weight(weight, state=weight.quant_state)
    return weight.detach().float()


def _merged(layer, adapter: str, weight):
    """peft's own merge of one adapter into ``weight`` (fp32, not in place)."""
    variant = getattr(layer, "lora_variant", {}).get(adapter)
    if variant is not None:  # DoRA and other variants merge their own way
        return variant.merge_safe(layer, adapter, weight.clone()).float()
    return weight + layer.get_delta_weight(adapter).float()


def adapter_targets(peft_model, into_dequantized: bool = True) -> dict[str, Target]:
    """Model parameter name -> Target for everything a peft adapter (LoRA, DoRA, embedding, routed-expert
    ``target_parameters``, modules_to_save, trained biases) changes; QLoRA: also every dequantised 4-bit weight when
    merging into the dequantised base, deltas only when merging into the original one."""
    import torch.nn.utils.parametrize as parametrize
    from peft.tuners.lora import LoraLayer
    from peft.utils.other import ModulesToSaveWrapper

    adapter = peft_model.active_adapter
    model = peft_model.get_base_model()
    targets: dict[str, Target] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and (adapter in module.lora_A or adapter in module.lora_embedding_A):
            param = getattr(module, "parameter_name", None) or "weight"
            base = module.get_base_layer()
            key = f"{_owner(name)}.{param}"
            if into_dequantized or not _quantized(base, param):
                targets[key] = Target("value", lambda m=module, b=base, p=param: _merged(
                    m, adapter, _weight_seen(b, p)))
            elif adapter in getattr(module, "lora_variant", {}):
                targets[key] = Target("merge", lambda w, m=module: _merged(m, adapter, w),
                                      probe=lambda m=module: m.get_delta_weight(adapter))
            else:
                targets[key] = Target("delta", lambda m=module: m.get_delta_weight(adapter).float())
            if getattr(module, "lora_bias", {}).get(adapter):
                targets[f"{_owner(name)}.bias"] = Target("value", lambda m=module, b=base: b.bias.detach().float() + (
                    m.lora_B[adapter].bias.float() * m.scaling[adapter]))
        elif isinstance(module, ModulesToSaveWrapper):
            for param, value in module.modules_to_save[adapter].named_parameters():
                targets[f"{name}.{param}"] = Target("value", value.detach().float)
    if into_dequantized:  # QLoRA: every 4-bit weight comes out dequantised, adapted or not
        for name, module in model.named_modules():
            quantized = ["weight"] if _quantized(module, "weight") else []
            if parametrize.is_parametrized(module):  # routed experts quantised as whole stacks (models/quantize.py)
                quantized += list(module.parametrizations)
            for param in quantized:
                targets.setdefault(f"{_owner(name)}.{param}", Target("value", lambda m=module, p=param: _weight_seen(
                    m, p)))
    if getattr(peft_model.peft_config[adapter], "bias", "none") != "none":  # trained biases are saved whole
        for name, value in model.named_parameters():
            if name.endswith(".bias") and "lora_" not in name and "modules_to_save" not in name:
                targets.setdefault(_owner(name), Target("value", value.detach().float))
    return targets


def _quantized(module, param: str) -> bool:
    return type(getattr(module, param, None)).__name__ == "Params4bit"


def full_targets(model) -> dict[str, Target]:
    """A full fine-tune: every trained parameter is what the export must hold."""
    return {name: Target("value", value.detach().float) for name, value in model.named_parameters()}


def rounding_step(expected, dtype):
    """One step between neighbouring ``dtype`` numbers at |expected| (what rounding to ``dtype`` may change)."""
    import torch

    info = torch.finfo(dtype)
    _, exponent = torch.frexp(expected.abs().clamp_min(info.tiny))
    return torch.ldexp(torch.full_like(expected, info.eps), exponent - 1)


def compare_to_targets(out: Path, base_path: Path, targets: dict[str, Target], converter) -> tuple[dict, list, dict]:
    """(counts, problems, stored dtype per parameter): every checkpoint tensor of ``out`` against its target
    (touched) or the base's bytes (untouched).

    ``converter``: a model loaded with ``from_pretrained`` from a folder in the base's layout (its recorded weight
    conversions turn parameter names back into checkpoint keys). Memory: one parameter's tensors at a time.
    """
    import torch
    from transformers.core_model_loading import revert_weight_conversion

    reader = _Reader(out, base_path)
    problems, covered, dtypes, touched, changed = [], set(), {}, 0, 0
    for name, target in targets.items():
        for key, piece in revert_weight_conversion(converter, {name: target.tensor()}).items():
            if key not in reader.base_keys:
                continue  # a tied parameter the checkpoint stores once
            covered.add(key)
            base, merged = reader.base(key), reader.merged(key)
            dtypes[name] = base.dtype
            same = raw_bytes(merged).equal(raw_bytes(base))
            changed += not same
            expected = _expected(target, piece, base)
            if expected.shape != base.shape:
                problems.append(f"{key}: expected {tuple(expected.shape)} from the trained model, the base has "
                                f"{tuple(base.shape)}")
            elif torch.equal(expected, base.float()):
                if not same:
                    problems.append(f"{key}: the adapter leaves it unchanged but the export differs from the base")
            else:
                touched += 1
                problem = _check_touched(key, merged, base, expected)
                if problem:
                    problems.append(problem)
    for key in sorted(reader.base_keys - covered):
        if not raw_bytes(reader.merged(key)).equal(raw_bytes(reader.base(key))):
            changed += 1
            problems.append(f"{key}: not changed by the adapter but differs from the base")
    counts = {"tensors": len(reader.base_keys), "changed": changed, "identical": len(reader.base_keys) - changed,
              "expected_changed": touched}
    return counts, problems, dtypes


def _expected(target: Target, piece, base):
    if target.kind == "value":
        return piece.float()
    if target.kind == "delta":
        return base.float() + piece.float()
    return target.compute(base.float())


def _check_touched(key: str, merged, base, expected) -> str | None:
    """None if ``merged`` is ``expected`` (base + adapter, or the trained weight) rounded to the stored dtype, else
    what is wrong and by how much."""
    import torch

    if merged.dtype != base.dtype:
        return f"{key}: stored as {merged.dtype}, the base has {base.dtype}"
    error = (merged.float() - expected).abs()
    allowed = rounding_step(expected, merged.dtype) + FP32_NOISE * (expected.abs() + (expected - base.float()).abs())
    bad = ~(error <= allowed)  # NaN counts as bad
    if not bad.any():
        return None
    worst = torch.where(bad, error.nan_to_num(float("inf")), torch.zeros_like(error)).argmax()
    return (f"{key}: differs from the expected value by up to {error.flatten()[worst].item():.3g} (allowed "
            f"{allowed.flatten()[worst].item():.2g} there, one {str(merged.dtype).removeprefix('torch.')} rounding "
            f"step); "
            f"{int(bad.sum())} of {bad.numel()} values off")


class _Reader:
    """Lazy per-shard handles on the export and the base."""

    def __init__(self, out: Path, base_path: Path):
        self.out, self.base_ckpt = open_checkpoint(out), open_checkpoint(base_path)
        self.base_keys = set(self.base_ckpt.weight_map) & set(self.out.weight_map)  # the rest: a structure problem
        self._handles: dict[tuple, object] = {}

    def _get(self, checkpoint, key: str):
        from safetensors import safe_open

        shard = checkpoint.weight_map[key]
        handle = self._handles.get((checkpoint.path, shard))
        if handle is None:
            handle = self._handles[(checkpoint.path, shard)] = safe_open(checkpoint.path / shard, "pt")
        return handle.get_tensor(key)

    def base(self, key: str):
        return self._get(self.base_ckpt, key)

    def merged(self, key: str):
        return self._get(self.out, key)
