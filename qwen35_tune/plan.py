"""Per-GPU memory planner: which launch strategy, micro-batch and accumulation fit a recipe on given GPUs.

Counts come from what ``train`` builds: the model's modules from its config.json (plan_shapes, equal to the
meta-device model), the adapters / trained parameters from the recipe through the project's own target resolution
and peft's rules (plan_trainable, equal to peft's count on the meta models of every shipped recipe). Bytes per GPU
follow plan_memory, whose docstring (and README.md's "Planning memory") lists every assumption. Closed-form counting
rather than building the meta model keeps ``plan`` instant and torch-free (a login node need not have torch);
the tests hold the two equal. QLoRA is never planned under sharded strategies (train/strategy_checks.py).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.plan_eval import describe_eval
from qwen35_tune.plan_memory import GB, Estimate, Setup, estimate
from qwen35_tune.plan_shapes import ModelShapes, build_shapes
from qwen35_tune.plan_trainable import Trainable, count_trainable
from qwen35_tune.strategies import STRATEGIES
from qwen35_tune.train.strategy_checks import SHARDED

SHIPPED = {
    "qwen/qwen3.5-9b": "qwen3_5_9b.json",
    "qwen/qwen3.5-9b-base": "qwen3_5_9b.json",
    "qwen/qwen3.5-35b-a3b": "qwen3_5_35b_a3b.json",
    "qwen/qwen3.5-35b-a3b-base": "qwen3_5_35b_a3b.json",
}
USABLE = 0.92


@dataclass(frozen=True)
class Gpus:
    count: int
    name: str
    memory_gb: float

    @property
    def usable_bytes(self) -> float:
        return self.memory_gb * GB * USABLE

    def __str__(self) -> str:
        return f"{self.count}x{self.name}-{self.memory_gb:g}GB"


def parse_gpus(text: str) -> Gpus:
    """'8xH100-80GB', '1xH200-141GB', '2x24GB' -> Gpus."""
    match = re.fullmatch(r"(\d+)\s*[xX]\s*(?:([A-Za-z0-9_.]+)-)?(\d+(?:\.\d+)?)\s*GB", text.strip())
    if not match or int(match.group(1)) < 1:
        raise UserError(f"--gpus {text!r}: expected COUNTxNAME-MEMORYGB, e.g. 8xH100-80GB or 1xH200-141GB")
    return Gpus(int(match.group(1)), match.group(2) or "GPU", float(match.group(3)))


def load_model_config(name_or_path: str) -> dict:
    """config.json as a dict: a shipped copy for the real Qwen3.5 hub ids (offline), else a local folder."""
    shipped = SHIPPED.get(name_or_path.lower())
    if shipped:
        return json.loads(resources.files("qwen35_tune.model_configs").joinpath(shipped).read_text())
    if name_or_path.startswith("tiny://"):
        from qwen35_tune.models.tiny import resolve_tiny

        name_or_path = str(resolve_tiny(name_or_path))
    path = Path(name_or_path) / "config.json"
    if not path.is_file():
        known = ", ".join(sorted({k.split("/")[1] for k in SHIPPED}))
        raise UserError(f"model.name_or_path: no config for '{name_or_path}' (the planner knows {known} offline, or "
                        "give a local checkpoint folder)")
    return json.loads(path.read_text())


def _trains_on_images(recipe) -> bool:
    """Rows with images: model.vision set in the recipe, or a card with media (media_dir, image columns, domain)."""
    if "vision" in recipe.model.model_fields_set:
        return True
    return any(card.media_dir or {"images", "videos"} & set(card.columns) or card.domain == "vision"
               for _, card in recipe.card_pairs())  # fmt: skip


def setup_from_recipe(recipe, shapes: ModelShapes) -> Setup:
    """The recipe's run as the memory model sees it."""
    train, lora, quant = recipe.train, recipe.method.lora, recipe.method.quantization
    double_quant = quant.bnb_4bit_use_double_quant if quant else True
    optim = train.optim.lower()
    patches = 0
    if shapes.vision and _trains_on_images(recipe):
        patches = recipe.model.vision.max_pixels // shapes.vision["patch_size"] ** 2
    return Setup(
        method=recipe.method.kind,
        micro_batch=train.per_device_train_batch_size,
        seq_len=(train.packing_length or train.max_length) if train.packing else train.max_length,
        checkpointing=train.gradient_checkpointing,
        dtype_bytes=4 if recipe.model.dtype == "float32" else 2,
        quant_bytes=0.5 + (1 / 64 + 4 / (64 * 256) if double_quant else 4 / 64),
        optim_state_bytes=2 if "8bit" in optim else 0 if optim.startswith(("sgd", "adafactor")) else 8,
        attn=recipe.model.attn_implementation or "sdpa",
        lora_r=lora.r,
        lora_dropout=bool(lora.lora_dropout) and recipe.method.kind != "full",
        dora=lora.use_dora and recipe.method.kind != "full",
        router_logits=bool(train.router_aux_loss_coef) and shapes.is_moe,
        image_patches=patches,
    )


@dataclass(frozen=True)
class Choice:
    """A runnable setting: strategy, micro-batch and its per-GPU estimate."""

    strategy: str
    micro_batch: int
    estimate: Estimate
    change: str | None = None  # recipe change it needs (None: the recipe as written)
    gpus: Gpus | None = None  # other GPUs it needs (None: the ones asked about)


@dataclass(frozen=True)
class Plan:
    gpus: Gpus
    setup: Setup
    trainable: Trainable
    estimates: dict
    recommended: Choice | None  # fastest that fits the recipe as written (CPU offload only when nothing else)
    alternative: Choice | None  # when offload or nothing fits: the smallest recipe or GPU change that fits
    global_batch: int
    recipe_accum: int | None  # None when the recipe states train.global_batch_size (accumulation is derived)
    eval_note: str | None
    needs_gb: float  # per-GPU memory the best strategy needs at micro-batch 1 (when nothing fits)

    @property
    def grad_accum(self) -> int | None:
        if not self.recommended:
            return None
        return max(1, math.ceil(self.global_batch / (self.recommended.micro_batch * self.gpus.count)))


def _fits(e: Estimate, gpus: Gpus) -> bool:
    return e.unsupported is None and e.total <= gpus.usable_bytes


def _first_fit(shapes, trainable, setup: Setup, gpus: Gpus, offload: bool = True,
               sharded: bool = True) -> Choice | None:  # fmt: skip
    """Least sharding first; the largest micro-batch up to the recipe's that fits (``sharded``: zero3 allowed)."""
    order = ("ddp", "zero2", "zero3")[: 3 if sharded else 2] if gpus.count > 1 else ("ddp",)
    for strategy in order + (("zero3_offload",) if offload else ()):
        for micro in range(setup.micro_batch, 0, -1):
            e = estimate(shapes, trainable, replace(setup, micro_batch=micro), strategy, gpus.count)
            if _fits(e, gpus):
                return Choice(strategy, micro, e)
    return None


def _smallest_change(shapes, trainable, setup: Setup, gpus: Gpus) -> Choice | None:
    """One recipe change at a time, least disruptive first; then more GPUs of the same kind (no CPU offload)."""
    candidates = []
    if not setup.checkpointing:
        candidates.append(("train.gradient_checkpointing: true", replace(setup, checkpointing=True)))
    if setup.method == "lora":
        candidates.append(("method.kind: qlora", replace(setup, method="qlora")))
    length = setup.seq_len // 2
    while length >= 512:
        candidates.append((f"train.max_length: {length}", replace(setup, seq_len=length)))
        length //= 2
    for text, changed in candidates:
        found = _first_fit(shapes, trainable, changed, gpus, offload=False)
        if found:
            return replace(found, change=text)
    for factor in (2, 4, 8, 16):
        more = replace(gpus, count=gpus.count * factor)
        found = _first_fit(shapes, trainable, setup, more, offload=False)
        if found:
            return replace(found, gpus=more)
    return None


def make_plan(recipe, config: dict, gpus: Gpus) -> Plan:
    shapes = build_shapes(config)
    trainable = count_trainable(recipe, shapes)
    setup = setup_from_recipe(recipe, shapes)
    estimates = {s: estimate(shapes, trainable, setup, s, gpus.count) for s in STRATEGIES}
    recommended = _first_fit(shapes, trainable, setup, gpus)
    alternative = None
    if recommended is None or recommended.strategy == "zero3_offload":  # offload works but is slow
        alternative = _smallest_change(shapes, trainable, setup, gpus)
    best = min((e for e in (estimate(shapes, trainable, replace(setup, micro_batch=1), s, gpus.count)
                            for s in STRATEGIES) if e.unsupported is None), key=lambda e: e.total)  # fmt: skip
    train = recipe.train  # train.global_batch_size when stated (accumulation is then derived at start)
    global_batch = train.global_batch_size or train.per_device_train_batch_size * train.gradient_accumulation_steps
    note = describe_eval(recipe, shapes, gpus.name, gpus.count, recommended.strategy if recommended else None)
    if note and recommended and recommended.strategy in SHARDED:  # a replicated setting would keep the eval
        keep = setup.method == "lora" and _first_fit(shapes, trainable, replace(setup, method="qlora"), gpus,
                                                     offload=False, sharded=False)  # fmt: skip
        note += (f", or keep it with method.kind: qlora and --launch {keep.strategy} (micro-batch {keep.micro_batch}, "
                 f"{keep.estimate.total / GB:.1f} GB per GPU)" if keep else
                 ", or keep it with a replicated strategy (ddp, zero2) on GPUs where one fits")
    recipe_accum = None if train.global_batch_size else train.gradient_accumulation_steps
    return Plan(gpus, setup, trainable, estimates, recommended, alternative, global_batch,
                recipe_accum, note, best.total / USABLE / GB)  # fmt: skip


def _memory(choice: Choice, gpus: Gpus) -> str:
    e = choice.estimate
    return (f"{e.total / GB:.1f} GB of {gpus.usable_bytes / GB:.1f} GB usable per GPU (weights {e.weights / GB:.1f}, "
            f"grads {e.grads / GB:.1f}, optimizer {e.optimizer / GB:.1f}, activations {e.activations / GB:.1f}, "
            f"LM head {e.lm_head / GB:.1f})")


def _describe_choice(choice: Choice, plan: Plan, lead: str) -> str:
    """'LEAD: --launch X, set KEY: VALUE, ... (global batch ...): MEMORY' -- what to change, and what it costs."""
    gpus = choice.gpus or plan.gpus
    accum = max(1, math.ceil(plan.global_batch / (choice.micro_batch * gpus.count)))
    changes = [choice.change] if choice.change else []
    if choice.micro_batch != plan.setup.micro_batch:
        changes.append(f"train.per_device_train_batch_size: {choice.micro_batch}")
    if plan.recipe_accum is not None and accum != plan.recipe_accum:  # None: derived from global_batch_size
        changes.append(f"train.gradient_accumulation_steps: {accum}")
    launch = f"--launch {choice.strategy}" + (f" on {gpus}" if choice.gpus else "")
    if choice.change or choice.gpus:
        what = f"set {', '.join(changes)}, then {launch}" if changes else launch
    else:
        what = f"{launch} with {', '.join(changes)}" if changes else f"{launch} with the recipe as written"
    derived = f"accumulation {accum} derived from train.global_batch_size, " if plan.recipe_accum is None else ""
    return (f"{lead}: {what} ({derived}global batch {choice.micro_batch * accum * gpus.count}; recipe asks "
            f"{plan.global_batch}): {_memory(choice, gpus)}")


def format_plan(plan: Plan, model: str) -> str:
    """The table and verdict the CLI prints."""
    g, s = plan.gpus, plan.setup
    groups = ", ".join(f"{k} {v / 1e6:,.1f}M" for k, v in sorted(plan.trainable.by_group().items(),
                                                                key=lambda kv: -kv[1]))  # fmt: skip
    lines = [f"{model}: {s.method}, {plan.trainable.total / 1e6:,.1f}M trainable parameters ({groups}), "
             f"micro-batch {s.micro_batch} x {s.seq_len} tokens, gradient checkpointing "
             f"{'on' if s.checkpointing else 'off'}; {g.count}x{g.name} {g.memory_gb:g} GB "
             f"({g.usable_bytes / GB:.1f} GB usable each)",
             f"{'strategy':<14}{'weights':>9}{'grads':>9}{'optim':>9}{'activ':>9}{'lm head':>9}{'total':>9}  fits"]
    for name, e in plan.estimates.items():
        fits = "yes" if _fits(e, g) else "no"
        note = f"  ({e.unsupported})" if e.unsupported else ""
        note += f"  (+{e.cpu_offload / GB:.0f} GB CPU RAM per GPU)" if e.cpu_offload else ""
        lines.append(f"{name:<14}" + "".join(f"{v / GB:>9.1f}" for v in (e.weights, e.grads, e.optimizer,
                                                                       e.activations, e.lm_head, e.total))
                     + f"  {'n/a' if e.unsupported else fits}{note}")  # fmt: skip
    none_fit = not any(_fits(e, g) for e in plan.estimates.values())
    if plan.recommended:
        if none_fit:
            lines.append(f"No strategy fits micro-batch {s.micro_batch} (every row says no); a smaller micro-batch "
                         "does, with more accumulation steps for the same global batch.")
        lines.append(_describe_choice(plan.recommended, plan, "recommended"))
        if plan.alternative:
            lines.append(_describe_choice(plan.alternative, plan, "without CPU offload (faster)"))
        elif plan.recommended.strategy == "zero3_offload":
            lines.append(f"No single change tried (gradient checkpointing, QLoRA, shorter max_length, up to "
                         f"{16 * g.count} GPUs) avoids CPU offload.")
    elif plan.alternative:
        lines.append(f"Does not fit on {g} even at micro-batch 1 with CPU offload (the best strategy needs "
                     f"{plan.needs_gb:.0f} GB per GPU).")
        lines.append(_describe_choice(plan.alternative, plan, "Smallest change that fits"))
    else:
        lines.append(f"Does not fit on {g}, and no single change tried (gradient checkpointing, QLoRA, shorter "
                     f"max_length, up to {16 * g.count} GPUs) fits either: the best strategy at micro-batch 1 needs "
                     f"{plan.needs_gb:.0f} GB per GPU. Use GPUs with at least that much memory, or combine changes "
                     "and re-run plan with them as overrides (e.g. method.kind=qlora train.max_length=2048).")
    if plan.eval_note:
        lines.append(plan.eval_note)
    return "\n".join(lines)
