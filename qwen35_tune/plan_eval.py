"""A rough cost of the recipe's in-training generation eval (``eval:`` section), for ``plan`` to state next to the
memory table.

Batched greedy decoding is memory-bound: each new token of a batch reads the weights once (for the MoE only the
experts the batch routes to) and pays a per-layer launch overhead in transformers' ``generate``. The step time is
modelled as ``weight bytes read / (half the GPU's memory bandwidth) + 0.5 ms per layer`` — a rough figure (± 2x),
meant to show whether an eval round costs minutes or hours, not to schedule by. Thinking-mode answers often run to
``max_new_tokens``; a batch runs as long as its longest answer.
"""

from __future__ import annotations

import math

from qwen35_tune.plan_shapes import ModelShapes
from qwen35_tune.train.strategy_checks import SHARDED

# HBM bandwidth (bytes/s) by GPU name as ``--gpus`` spells it; other names are read as 2 TB/s.
BANDWIDTH = {"H200": 4.8e12, "H100": 3.35e12, "H20": 4.0e12, "A100": 2.0e12, "L40S": 0.86e12, "A10G": 0.6e12,
             "B200": 8.0e12, "GH200": 4.0e12, "MI300X": 5.3e12}  # fmt: skip
LAYER_OVERHEAD_S = 0.5e-3


def decode_step_seconds(shapes: ModelShapes, gpu_name: str, batch: int) -> float:
    """Seconds for one decode step of ``batch`` sequences (bf16 weights)."""
    t = shapes.text
    read = 0.0
    for module in shapes.modules:
        numel = module.numel
        if module.kind == "experts":  # share of experts at least one of the batch's k choices lands on
            numel *= 1 - (1 - t["num_experts_per_tok"] / t["num_experts"]) ** batch
        if not module.name.startswith("model.visual."):
            read += numel * 2
    bandwidth = BANDWIDTH.get(gpu_name.upper(), 2.0e12) * 0.5
    return read / bandwidth + LAYER_OVERHEAD_S * len(shapes.layer_types)


def eval_round(recipe, shapes: ModelShapes, gpu_name: str, ranks: int) -> tuple[int, float] | None:
    """(decode steps, seconds) of one eval round on ``ranks`` replicas (rows split across them), or None."""
    ev = recipe.eval
    if not ev.suites or not (ev.at_start or ev.at_end or ev.every_n_steps):
        return None
    rows = ev.limit or 128  # None = all held-out rows; the shipped CoT recipes cap at 128
    batches = math.ceil(math.ceil(rows / ranks) / ev.batch_size)
    steps = len(ev.suites) * len(ev.modes) * batches * ev.max_new_tokens
    return steps, steps * decode_step_seconds(shapes, gpu_name, min(ev.batch_size, rows))


def describe_eval(recipe, shapes: ModelShapes, gpu_name: str, gpus: int, strategy: str | None) -> str | None:
    """One or two lines on the eval's cost under the recommended strategy (skipped when parameters are sharded)."""
    ev = recipe.eval
    one = eval_round(recipe, shapes, gpu_name, 1)
    if one is None:
        return None
    when = ", ".join(w for w, on in (("at start", ev.at_start), (f"every {ev.every_n_steps} steps",
                                                                  ev.every_n_steps), ("at end", ev.at_end)) if on)
    rows = ev.limit or "all held-out"
    head = (f"in-training eval ({when}): {len(ev.suites)} suite(s) x {rows} rows x {len(ev.modes)} mode(s) x up to "
            f"{ev.max_new_tokens} new tokens, batch {ev.batch_size}")
    if strategy in SHARDED:
        return (f"{head}: skipped under {strategy} (sharded parameters); evaluate the finished run with "
                f"`qwen35-tune eval RUN` (~{_minutes(one[1])} per round on one {gpu_name})")
    steps, seconds = eval_round(recipe, shapes, gpu_name, gpus)
    return (f"{head}: ~{_minutes(seconds)} per round ({steps:,} decode steps per GPU, rows split over {gpus} "
            f"GPU{'s' if gpus > 1 else ''}; rough)")


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
