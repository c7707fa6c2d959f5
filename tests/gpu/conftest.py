"""GPU-test helpers: which recipe overrides let a tiny-model GPU test past the kernel check on this install."""

from __future__ import annotations

import pytest


def fla_usable() -> bool:
    """flash-linear-attention >= the floor is installed (causal-conv1d is optional: fla's convolution stands in)."""
    from qwen35_tune import patches

    return patches.version_at_least(patches.installed_version("fla"), patches.FLA_MIN_VERSION)


@pytest.fixture
def kernel_overrides() -> list[str]:
    """[] where train's kernel check passes as installed (fla, with or without causal-conv1d); else the override
    that lets these tests (about QLoRA, FSDP, ... on a tiny model, not about speed) run on the torch path."""
    return [] if fla_usable() else ["model.allow_slow_kernels=true"]


@pytest.fixture
def fla_required() -> None:
    """Skip (with the reason) where flash-linear-attention is missing or older than the floor."""
    if not fla_usable():
        pytest.skip("needs flash-linear-attention>=0.5.0 (pip install 'qwen35-tune[kernels]')")
