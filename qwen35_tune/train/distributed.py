"""Model preparation that depends on the launch strategy (set by ``accelerate launch --config_file ...``)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def moe_block_classes(model) -> list[type]:
    """The MoE sparse-block classes in ``model`` (``Qwen3_5MoeSparseMoeBlock``), found by name so text-only and
    vision-language MoE models both match."""
    return sorted({type(m) for m in model.modules() if type(m).__name__.endswith("SparseMoeBlock")},
                  key=lambda c: c.__name__)


def prepare_for_strategy(model) -> None:
    """Under ZeRO-3, make each MoE block a leaf: its experts are gathered together instead of hook by hook.

    Without it, ranks routing tokens to different experts fetch different parameters and hang or crawl
    (hiyouga/LlamaFactory#10285, deepspeedai/DeepSpeed#7461); DeepSpeed's own fix is ``set_z3_leaf_modules``.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    classes = moe_block_classes(model)
    if not classes or not hf_deepspeed.is_deepspeed_zero3_enabled():
        return
    from deepspeed.utils import set_z3_leaf_modules

    set_z3_leaf_modules(model, classes)
    log.info("ZeRO-3 leaf modules: %s", ", ".join(c.__name__ for c in classes))
