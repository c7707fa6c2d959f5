"""Parameter groups of a Qwen3.5 model by name, and the freezing policies of a full fine-tune (``method.freeze``)."""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

# Checked in order; the first match names the group. Names are transformers 5.x ones, with or without peft wrappers.
GROUP_PATTERNS: tuple[tuple[str, str], ...] = (
    ("projector", r"visual\.(merger|deepstack_merger_list)\."),
    ("vision", r"visual\."),
    ("routed_experts", r"mlp\.experts\."),
    ("router", r"mlp\.gate\."),
    ("shared_expert", r"mlp\.shared_expert(_gate)?\."),
    ("linear_attention", r"linear_attn\."),
    ("attention", r"self_attn\."),
    ("mlp", r"mlp\."),
    ("embeddings", r"embed_tokens\."),
    ("lm_head", r"(^|\.)lm_head\."),
)
_COMPILED = tuple((group, re.compile(pattern)) for group, pattern in GROUP_PATTERNS)
# Parts of the language model that `freeze: [language_model]` covers (norms included, lm_head and embeddings too).
LANGUAGE_GROUPS = ("routed_experts", "router", "shared_expert", "linear_attention", "attention", "mlp",
                   "embeddings", "lm_head", "other")  # fmt: skip
DEFAULT_FULL_FREEZE = ("vision", "projector")


def group_of(name: str) -> str:
    """The group a parameter belongs to ('other' for norms and anything unnamed)."""
    for group, pattern in _COMPILED:
        if pattern.search(name):
            return group
    return "other"


def frozen_groups(freeze: list[str] | None) -> set[str]:
    """Recipe ``method.freeze`` names → parameter groups to freeze (None = the vision tower and projector)."""
    names = set(DEFAULT_FULL_FREEZE if freeze is None else freeze)
    groups = names - {"language_model"}
    if "language_model" in names:
        groups |= set(LANGUAGE_GROUPS)
    return groups


def apply_freeze(model, freeze: list[str] | None) -> dict[str, int]:
    """Set ``requires_grad`` for a full fine-tune; returns how many parameters were frozen per group."""
    groups = frozen_groups(freeze)
    frozen: dict[str, int] = {}
    for name, param in model.named_parameters():
        group = group_of(name)
        param.requires_grad_(group not in groups)
        if group in groups:
            frozen[group] = frozen.get(group, 0) + param.numel()
    if frozen:
        log.info("frozen for the full fine-tune: %s", ", ".join(f"{g} ({n:,})" for g, n in sorted(frozen.items())))
    return frozen
