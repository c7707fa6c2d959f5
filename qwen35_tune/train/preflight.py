"""Preflight: what the run will actually train, per parameter group, checked before the first step.

Written to the run directory as ``preflight.json`` and ``preflight.txt`` and logged as a table. The MoE silent
failure (adapters that skip the routed experts or the Gated DeltaNet projections) stops the run here unless the
recipe acknowledges it with ``method.acknowledge_untouched: true``.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from qwen35_tune import strict_json
from qwen35_tune.errors import UserError
from qwen35_tune.registry import spec_for
from qwen35_tune.train.freeze import GROUP_PATTERNS, group_of

log = logging.getLogger(__name__)

_ADAPTER_MARKERS = ("lora_", "modules_to_save.")
GROUPS = tuple(group for group, _ in GROUP_PATTERNS) + ("other",)
# Groups an MoE run must train unless the recipe says otherwise (the failures users report most).
MOE_REQUIRED = ("routed_experts", "linear_attention")


def _is_adapter(name: str) -> bool:
    return any(marker in name for marker in _ADAPTER_MARKERS)


def count_groups(model) -> dict[str, dict[str, int]]:
    """Per group: base parameters, trainable parameters and trainable bytes (what the adapter or checkpoint adds)."""
    table = {g: {"params": 0, "trainable": 0, "trainable_bytes": 0} for g in GROUPS}
    for name, param in model.named_parameters():
        row = table[group_of(name)]
        if not _is_adapter(name):
            row["params"] += param.numel()
        if param.requires_grad:
            row["trainable"] += param.numel()
            row["trainable_bytes"] += param.numel() * param.element_size()
    return {g: row for g, row in table.items() if row["params"] or row["trainable"]}


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


def render_table(groups: dict[str, dict[str, int]], title: str) -> str:
    """The preflight table as plain text (rich layout, no colour)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("group", "params", "trainable", "%", "adapter / trained size"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for group, row in [*groups.items(), ("total", _total(groups))]:
        pct = 100 * row["trainable"] / row["params"] if row["params"] else 0.0
        table.add_row(group, f"{row['params']:,}", f"{row['trainable']:,}", f"{pct:.3f}",
                      _mib(row["trainable_bytes"]))
    console = Console(width=100, record=True, file=io.StringIO(), color_system=None)
    console.print(table)
    return console.export_text()


def _total(groups: dict[str, dict[str, int]]) -> dict[str, int]:
    return {key: sum(row[key] for row in groups.values()) for key in ("params", "trainable", "trainable_bytes")}


def untouched_groups(groups: dict[str, dict[str, int]], moe: bool) -> list[str]:
    """Groups an MoE run is expected to train but which got no trainable parameter."""
    if not moe:
        return []
    return [g for g in MOE_REQUIRED if groups.get(g, {}).get("params") and not groups[g]["trainable"]]


def run_preflight(recipe, model, run_dir: Path) -> dict:
    """Count, save and log the table; raise UserError for an MoE run that leaves required groups untouched."""
    spec = spec_for(model.config.model_type)
    groups = count_groups(model)
    total = _total(groups)
    if not total["trainable"]:
        key = "method.freeze" if recipe.method.kind == "full" else "method.lora.target_modules"
        raise UserError(f"{key}: nothing is left to train")
    untouched = untouched_groups(groups, spec.moe)
    report = {"model_type": model.config.model_type, "method": recipe.method.kind, "groups": groups, "total": total,
              "trainable_percent": 100 * total["trainable"] / max(total["params"], 1), "untouched": untouched,
              "acknowledged": recipe.method.acknowledge_untouched}  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "preflight.json").write_text(strict_json.dumps(report, indent=2))
    text = render_table(groups, f"preflight: {recipe.method.kind} on {model.config.model_type}")
    (run_dir / "preflight.txt").write_text(text)
    log.info("\n%s", text)
    if untouched and not recipe.method.acknowledge_untouched:
        key = "method.freeze" if recipe.method.kind == "full" else "method.lora.target_modules"
        raise UserError(f"{key}: this MoE run would leave {' and '.join(untouched)} untouched (no trainable "
                        f"parameter; see {run_dir / 'preflight.txt'}); add the missing presets (e.g. target_modules: "
                        "[all]) or set method.acknowledge_untouched: true if that is what you want")
    if untouched:
        log.warning("untouched by this run (acknowledged): %s", ", ".join(untouched))
    return report


def check_recipe_fits_model(recipe, model) -> None:
    """Recipe settings that only the loaded model can refute, reported by recipe key before training starts."""
    spec = spec_for(model.config.model_type)
    coef = recipe.train.router_aux_loss_coef
    if coef and not spec.moe:
        raise UserError(f"train.router_aux_loss_coef: {model.config.model_type} is a dense model with no router "
                        f"(found {coef}); remove the key")
    if recipe.method.freeze and not spec.vision and {"vision", "projector"} & set(recipe.method.freeze):
        log.info("method.freeze: %s has no vision tower; freezing it is a no-op", model.config.model_type)


def prepare_model(recipe, model, model_path: str) -> None:
    """Before the trainer exists: kernel check, fp32 parameters restored, recipe-vs-model checks, freezing policy."""
    import torch

    from qwen35_tune.doctor import check_kernels
    from qwen35_tune.models.fp32_params import restore_fp32_params
    from qwen35_tune.train.freeze import apply_freeze
    from qwen35_tune.train.param_groups import effective_freeze

    spec = spec_for(model.config.model_type)
    attention = getattr(model.config, "_attn_implementation", None) or recipe.model.attn_implementation  # as loaded
    check_kernels(model.config.model_type, attention, recipe.model.allow_slow_kernels,
                  on_cuda=torch.cuda.is_available())
    restore_fp32_params(model, model_path, spec.fp32_params, recipe.model.revision)
    check_recipe_fits_model(recipe, model)
    if recipe.method.kind == "qlora" and spec.moe:  # bitsandbytes' loader leaves the fused 3-D experts in bf16
        from qwen35_tune.models.quantize import quantize_moe_experts

        quant = recipe.method.quantization
        quantize_moe_experts(model, quant.bnb_4bit_quant_type, quant.bnb_4bit_use_double_quant)
    if recipe.method.kind == "full":
        apply_freeze(model, effective_freeze(recipe))  # a part given its own rate trains
