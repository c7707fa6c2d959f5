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


TABLE_WIDTH = 80  # a log file or a terminal of the classic width shows the table unwrapped


def _size(n: int) -> str:
    """Bytes as MiB, or GiB from 1 GiB on (a full fine-tune's size stays a short column)."""
    return f"{n / 2**30:,.2f} GiB" if n >= 2**30 else f"{n / 2**20:,.2f} MiB"


def render_table(groups: dict[str, dict[str, int]], title: str) -> str:
    """The preflight table as plain text (rich layout, no colour, no vertical rules) within ``TABLE_WIDTH``
    columns; 'trained size' is the adapter's size for LoRA, the trained parameters' for a full fine-tune."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("group", "params", "trainable", "% trained", "trained size"):
        table.add_column(col, justify="left" if col == "group" else "right", no_wrap=True)
    for group, row in [*groups.items(), ("total", _total(groups))]:
        pct = 100 * row["trainable"] / row["params"] if row["params"] else 0.0
        table.add_row(group, f"{row['params']:,}", f"{row['trainable']:,}", f"{pct:.3f}",
                      _size(row["trainable_bytes"]))
    console = Console(width=TABLE_WIDTH, record=True, file=io.StringIO(), color_system=None)
    console.print(table)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"


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
    log.info("\n%s", text.rstrip())
    if untouched and not recipe.method.acknowledge_untouched:
        key = "method.freeze" if recipe.method.kind == "full" else "method.lora.target_modules"
        raise UserError(f"{key}: this MoE run would leave {' and '.join(untouched)} untouched (no trainable "
                        f"parameter; see {run_dir / 'preflight.txt'}); add the missing presets (e.g. target_modules: "
                        "[all]) or set method.acknowledge_untouched: true if that is what you want")
    if untouched:
        log.warning("untouched by this run (acknowledged): %s", ", ".join(untouched))
    return report
