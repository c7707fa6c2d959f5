"""Session fixtures: tiny Qwen3.5 checkpoints written once (into a per-session cache) and loaded through the same
``from_pretrained`` path as a real model, plus the GPU gate."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    # Tests never touch the user's cache: tiny checkpoints are built once per session into a temporary folder
    # (subprocesses inherit it through the environment).
    cache = tempfile.mkdtemp(prefix="qwen35-tune-tests-")
    config._qwen35_cache = cache
    os.environ["QWEN35_TUNE_CACHE"] = cache
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_unconfigure(config):
    cache = getattr(config, "_qwen35_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip)


def _tiny(kind: str) -> Path:
    from qwen35_tune.models.tiny import resolve_tiny

    return resolve_tiny(f"tiny://{kind}")


@pytest.fixture(scope="session")
def tiny_dense() -> Path:
    return _tiny("dense")


@pytest.fixture(scope="session")
def tiny_moe() -> Path:
    return _tiny("moe")


@pytest.fixture(scope="session")
def tiny_vision() -> Path:
    return _tiny("vision")


@pytest.fixture(scope="session")
def small_vision(tiny_vision):
    """(processor, settings) of the tiny vision checkpoint under small pixel budgets (32x32 to 64x64), loaded once
    for the media unit tests."""
    from qwen35_tune.models.processor import VisionSettings, load_processor

    settings = VisionSettings(min_pixels=32 * 32, max_pixels=64 * 64)
    return load_processor(str(tiny_vision), settings), settings


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from qwen35_tune.models.tiny_tokenizer import build_tiny_tokenizer

    return build_tiny_tokenizer()
