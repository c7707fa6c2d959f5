"""Load a Qwen3.5 checkpoint (hub id, local path or ``tiny://KIND``) in the class its config names, and its tokenizer.

The class comes from ``config.architectures``: ``AutoModelForCausalLM`` on a vision checkpoint silently builds the
text-only model and drops the vision tower, which is the wrong model to train and to merge back.
"""

from __future__ import annotations

import logging

from qwen35_tune.errors import UserError
from qwen35_tune.models.source_errors import checkpoint_source
from qwen35_tune.models.tiny import TINY_SCHEME, resolve_tiny

log = logging.getLogger(__name__)


def resolve_model_path(name_or_path: str) -> str:
    """A path or hub id that ``from_pretrained`` accepts; ``tiny://`` kinds are built into the local cache."""
    if name_or_path.startswith(TINY_SCHEME):
        return str(resolve_tiny(name_or_path))
    return name_or_path


def load_config(name_or_path: str, revision: str | None = None, key: str | None = None):
    """The checkpoint's config; a missing folder, an uncached hub id offline or a broken config is a UserError
    naming ``key`` (the setting the path came from; default model.name_or_path) and what to do."""
    from transformers import AutoConfig

    with checkpoint_source(name_or_path, key, "config"):
        return AutoConfig.from_pretrained(name_or_path, revision=revision)


def model_class(config):
    """The transformers class named in ``config.architectures`` (what the checkpoint was saved as)."""
    import transformers

    names = getattr(config, "architectures", None) or []
    for name in names:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    raise UserError(f"config names no transformers class this version knows (architectures={names})")


def resolve_dtype(dtype: str):
    """``auto`` means fp32 on CPU (bf16 is several times slower on CPUs) and bf16 on CUDA."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, dtype)


def load_tokenizer(path: str, revision: str | None = None, chat_template: str | None = None, key: str | None = None):
    from transformers import AutoTokenizer

    with checkpoint_source(path, key, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    if not tokenizer.chat_template:
        raise UserError(f"the tokenizer of '{path}' has no chat template; set chat.template to a .jinja file")
    return tokenizer


def load_model(
    path: str,
    dtype: str = "auto",
    revision: str | None = None,
    attn_implementation: str | None = None,
    quantization_config=None,
):
    """The model in the class the checkpoint was saved as, with the cache off for training.

    Each process of a launched run loads where its strategy wants it (models/placement.py), and a 4-bit load stores
    the MoE's fused expert stacks in 4 bit as they arrive instead of after the whole bf16 model is in memory.
    """
    from qwen35_tune.models.placement import placement_here

    config = load_config(path, revision)
    cls = model_class(config)
    kwargs = {"dtype": resolve_dtype(dtype), "revision": revision}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    placement = placement_here(quantized=quantization_config is not None)
    kwargs.update(placement.kwargs)
    if placement.weights_from_rank0:
        model = _load_empty(cls, path, config, kwargs)
    else:
        with _experts_in_4bit(quantization_config):
            model = cls.from_pretrained(path, **kwargs)
    model.config.use_cache = False
    # Vision checkpoints read use_cache from the text config; a cache there also hides packed-row boundaries.
    model.config.get_text_config().use_cache = False
    log.info("loaded %s from %s (%s, %s)", cls.__name__, path, kwargs["dtype"], placement.strategy)
    return model


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


def _load_empty(cls, path: str, config, kwargs: dict):
    """The model with meta parameters and real buffers, for a rank whose weights arrive from rank 0.

    transformers takes no path together with a state dict (the config says what to build), and reports every key of
    the empty state dict as missing; that report is silenced here because the keys are not missing, only elsewhere.
    """
    report = logging.getLogger("transformers.modeling_utils")
    drop_report = _DropLoadReport()
    report.addFilter(drop_report)
    try:
        model = cls.from_pretrained(None, config=config, **kwargs)
    finally:
        report.removeFilter(drop_report)
    model.config.name_or_path = path
    return model


def _experts_in_4bit(quantization_config):
    """Quantize MoE expert stacks while loading when the load is 4-bit (a no-op context otherwise)."""
    from contextlib import nullcontext

    if quantization_config is None or not getattr(quantization_config, "load_in_4bit", False):
        return nullcontext()
    from qwen35_tune.models.quantize import experts_in_4bit_while_loading

    return experts_in_4bit_while_loading(quantization_config.bnb_4bit_quant_type,
                                         quantization_config.bnb_4bit_use_double_quant)
