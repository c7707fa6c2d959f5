"""What ``train`` trains for a recipe, counted on the module list of plan_shapes instead of a built model.

The targets come from the same code ``train`` uses (``train.peft_setup.resolve_targets`` for presets and explicit
names, ``train.freeze`` / ``train.param_groups`` for full fine-tunes and per-part rates); what peft then does with
them is restated here (peft 0.21: ``target_modules`` as one regex, fully matched against module names; fused
parameters matched by name suffix and wrapped by ``ParamWrapper``; ``modules_to_save`` matched by name suffix and
copied; LoRA / DoRA parameter shapes per wrapped layer type). tests/unit/test_plan_counts.py holds the result equal
to peft's own count on the meta-device models of every shipped recipe, group by group.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from types import SimpleNamespace

from qwen35_tune.errors import UserError
from qwen35_tune.plan_shapes import ModelShapes, Module
from qwen35_tune.train.freeze import frozen_groups, group_of
from qwen35_tune.train.param_groups import build_param_groups, effective_freeze, part_of
from qwen35_tune.train.peft_setup import check_expert_options, resolve_targets

LORA_WRAPS = ("linear", "embedding", "conv1d", "conv3d")  # module kinds peft's LoRA has a layer for


@dataclass(frozen=True)
class Trainable:
    """Trainable parameters by name, and by how ``train`` stores them (which decides their bytes)."""

    adapter: dict[str, int] = field(default_factory=dict)  # peft-created LoRA / DoRA tensors
    base: dict[str, int] = field(default_factory=dict)  # base parameters trained in place (full, biases)
    copies: dict[str, int] = field(default_factory=dict)  # modules_to_save: trained copies beside frozen originals
    adapted: tuple[tuple[str, int, int], ...] = ()  # (module, d_in, d_out) of every LoRA-wrapped layer
    adapted_experts: tuple[str, ...] = ()  # fused expert parameters with a LoRA ParamWrapper

    @property
    def total(self) -> int:
        return sum(self.adapter.values()) + sum(self.base.values()) + sum(self.copies.values())

    def by_group(self) -> dict[str, int]:
        """Trainable parameters per ``train.freeze`` group (the preflight table's rows)."""
        out: dict[str, int] = {}
        for name, n in (*self.adapter.items(), *self.base.items(), *self.copies.items()):
            out[group_of(name)] = out.get(group_of(name), 0) + n
        return out

    def by_part(self) -> dict[str, int]:
        """Trainable parameters per learning-rate part (language_model / projector / vision)."""
        out: dict[str, int] = {}
        for name, n in (*self.adapter.items(), *self.base.items(), *self.copies.items()):
            out[part_of(name)] = out.get(part_of(name), 0) + n
        return out


def count_trainable(recipe, shapes: ModelShapes) -> Trainable:
    """The parameters ``train`` leaves trainable for ``recipe`` on this model (errors as ``train`` raises them)."""
    trainable = _full(recipe, shapes) if recipe.method.kind == "full" else _lora(recipe, shapes)
    if not trainable.total:
        key = "method.freeze" if recipe.method.kind == "full" else "method.lora.target_modules"
        raise UserError(f"{key}: nothing is left to train")
    names = [(n, SimpleNamespace(requires_grad=True)) for n in (*trainable.adapter, *trainable.base,
                                                                 *trainable.copies)]  # fmt: skip
    build_param_groups(names, recipe.train.learning_rates.given(), set(), 0.0)  # a rate for an untrained part
    return trainable


def _full(recipe, shapes: ModelShapes) -> Trainable:
    frozen = frozen_groups(effective_freeze(recipe))
    return Trainable(base={n: math.prod(s) for n, s, _ in shapes.named_parameters() if group_of(n) not in frozen})


def _all_module_names(shapes: ModelShapes) -> list[str]:
    """Every module name ``named_modules`` yields that peft matches against: owners of parameters and containers."""
    names = dict.fromkeys(m.name for m in shapes.modules)
    for module in shapes.modules:
        parts = module.name.split(".")
        names.update(dict.fromkeys(".".join(parts[:i]) for i in range(1, len(parts))))
    return list(names)


def _under(shapes: ModelShapes, prefix: str):
    return [(n, s, m) for n, s, m in shapes.named_parameters() if n.startswith(prefix + ".")]


def _lora(recipe, shapes: ModelShapes) -> Trainable:
    lora = recipe.method.lora
    targets = resolve_targets(recipe, shapes.model_type)
    check_expert_options(recipe, targets)
    if targets.regex is None and not targets.parameters:
        raise UserError("method.lora.target_modules: no module gets an adapter; name a preset such as 'all'")
    owners = {m.name: m for m in shapes.modules}
    names = _all_module_names(shapes)
    copies: dict[str, int] = {}
    saved: list[str] = []
    for name in names:  # peft _set_trainable: plain suffix match, outermost module wins
        if any(name.endswith(t) for t in targets.save) and not any(name.startswith(s + ".") for s in saved):
            saved.append(name)
            copies.update({n: math.prod(s) for n, s, _ in _under(shapes, name)})
    adapter: dict[str, int] = {}
    adapted: list[tuple[str, int, int]] = []
    regex = targets.regex if targets.regex is not None else r"^$"
    for name in names:
        if not re.fullmatch(regex, name) or any(re.match(rf"(^|.*\.){m}($|\..*)", name) for m in targets.save):
            continue  # peft never puts an adapter on a module it also saves in full
        module = owners.get(name)
        if module is None or module.kind not in LORA_WRAPS:
            kind = module.kind if module else "container of other modules"
            raise UserError(f"method.lora.target_modules: '{name}' is a {kind} module, which peft cannot wrap with "
                            "LoRA (it wraps linear, embedding and convolution layers; fused MoE experts are adapted "
                            "through the 'routed_experts' preset)")
        adapter.update(_lora_tensors(module, lora.r, lora.use_dora))
        d_out, d_in = module.weight[0], math.prod(module.weight[1:])
        adapted.append((name, d_in, d_out))
    experts: list[str] = []
    for pname, shape, _ in shapes.named_parameters():
        if any(pname == t or pname.endswith("." + t) for t in targets.parameters):
            num = shape[0] if len(shape) == 3 else 1
            adapter[pname + ".lora_A"] = lora.r * num * shape[-1]
            adapter[pname + ".lora_B"] = lora.r * num * shape[-2]
            experts.append(pname)
    base = _trained_biases(lora.bias, shapes, {a[0] for a in adapted})
    return Trainable(adapter, base, copies, tuple(adapted), tuple(experts))


def _lora_tensors(module: Module, r: int, dora: bool) -> dict[str, int]:
    """peft's tensors for one wrapped layer: lora_A, lora_B (+ DoRA's magnitude vector)."""
    shape = module.weight
    if module.kind == "embedding":  # lora_embedding_A (r, num_embeddings), lora_embedding_B (embedding_dim, r)
        a, b, magnitude = r * shape[0], r * shape[1], shape[1]
    elif module.kind.startswith("conv"):
        if module.groups > 1 and r % module.groups:
            raise UserError(f"method.lora.target_modules: '{module.name}' is a convolution with groups="
                            f"{module.groups}; peft adapts it only with a rank divisible by the groups (r={r})")
        in_channels = shape[1] * module.groups
        a = r * in_channels * math.prod(shape[2:])  # lora_A: conv(in, r, same kernel)
        b = (r // module.groups) * shape[0]  # lora_B: 1x1 conv(r, out, groups)
        magnitude = shape[0]
    else:
        a, b, magnitude = r * shape[1], r * shape[0], shape[0]
    out = {f"{module.name}.lora_A": a, f"{module.name}.lora_B": b}
    if dora:
        out[f"{module.name}.lora_magnitude_vector"] = magnitude
    return out


def _trained_biases(bias: str, shapes: ModelShapes, wrapped: set[str]) -> dict[str, int]:
    """peft ``bias``: 'all' trains every parameter named ``bias`` (not ``dt_bias``); 'lora_only' those of wrapped
    layers."""
    if bias == "all":
        return {n: math.prod(s) for n, s, _ in shapes.named_parameters() if n.endswith(".bias")}
    if bias == "lora_only":
        return {n: math.prod(s) for n, s, m in shapes.named_parameters() if m.name in wrapped and n.endswith(".bias")}
    return {}
