"""The recipe decides the mixed precision of a run, not the launcher.

``accelerate launch`` exports its config's ``mixed_precision`` as ``ACCELERATE_MIXED_PRECISION`` and transformers'
``TrainingArguments`` adopts it whenever ``bf16``/``fp16`` are off (transformers 5.x ``__post_init__``; the DeepSpeed
plugin's ``bf16.enabled: auto`` is filled from the same value). A launch config saying ``bf16`` would so run an
fp32 recipe under bf16 autocast, silently (2-rank weights 2.9e-2 away from the 1-rank run). Before the trainer
arguments are built, the variable is set to what the recipe resolved to, and a disagreeing launcher value that asked
for lower precision is reported as overridden.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ENV = "ACCELERATE_MIXED_PRECISION"


def recipe_precision(bf16: bool, fp16: bool = False) -> str:
    """accelerate's name for the precision the recipe resolved to: 'bf16', 'fp16' or 'no' (fp32)."""
    return "fp16" if fp16 else "bf16" if bf16 else "no"


def enforce_recipe_precision(bf16: bool, fp16: bool = False) -> str:
    """Set ``ACCELERATE_MIXED_PRECISION`` to the recipe's precision; log when a launcher asked for another one.

    Returns the precision set. 'no' from the launcher is accelerate's default (every ``accelerate launch`` exports
    it), so only a launcher value that asks for a lower precision than the recipe is reported.
    """
    wanted = recipe_precision(bf16, fp16)
    launcher = (os.environ.get(ENV) or "no").lower()
    if launcher not in ("no", wanted):
        recipe_says = "train.bf16: true" if wanted == "bf16" else "train.extra.fp16: true" if wanted == "fp16" else (
            "train.bf16: false (fp32)")  # fmt: skip
        log.warning("the launch config asks for mixed_precision=%s (%s); the recipe decides: %s. Set train.bf16 in "
                    "the recipe to change the run's precision", launcher, ENV, recipe_says)
    os.environ[ENV] = wanted
    return wanted
