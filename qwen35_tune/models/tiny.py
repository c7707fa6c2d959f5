"""Tiny, randomly initialised Qwen3.5 checkpoints of the real architectures, built offline for tests and CI.

They are written once with ``save_pretrained`` and then loaded through the ordinary ``from_pretrained`` path,
so the code that trains ``tiny://dense`` is the code that trains ``Qwen/Qwen3.5-9B``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.registry import FP32_PARAM_SUFFIXES, QWEN35_VISION, TINY_KINDS, TINY_SCHEME

log = logging.getLogger(__name__)

# Bump when the tiny configs change, so cached checkpoints are rebuilt.
KIT_VERSION = "2"


def _text_config(vocab_size: int, moe: bool, pad_id: int, eos_id: int) -> dict:
    """Text config dims kept small but inside what serving engines' CPU kernels accept (head_dim 64, GDN dims 128)."""
    cfg = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        # The real 3:1 hybrid: three Gated DeltaNet layers, then one gated full-attention layer.
        "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"],
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 64,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "linear_key_head_dim": 128,
        "linear_value_head_dim": 128,
        "linear_conv_kernel_dim": 4,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        # Wider than the real 0.02: a random tiny model then makes peaked predictions, so a few LoRA steps give a
        # clear loss drop (at 0.02 its near-uniform logits barely move when only adapters train).
        "initializer_range": 0.1,
        "tie_word_embeddings": False,
        # partial_rotary_factor 0.25 of head_dim 64 -> 16 rotary dims -> 8 frequencies split over (t, h, w).
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10_000_000.0,
            "partial_rotary_factor": 0.25,
            "mrope_section": [3, 3, 2],
            "mrope_interleaved": True,
        },
        "pad_token_id": pad_id,
        "eos_token_id": eos_id,
        "bos_token_id": None,
    }
    if moe:
        cfg.update(
            num_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=32,
            router_aux_loss_coef=0.001,
        )
        cfg.pop("intermediate_size")
    return cfg


def _vision_config(text_hidden: int) -> dict:
    return {
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 2,
        "in_channels": 3,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": text_hidden,
        "num_position_embeddings": 256,
    }


def build_tiny_config(kind: str, tokenizer):
    """The transformers config object for one tiny kind, with token ids taken from the tiny tokenizer."""
    from transformers import Qwen3_5Config, Qwen3_5MoeConfig, Qwen3_5MoeTextConfig, Qwen3_5TextConfig

    from qwen35_tune.models.tiny_tokenizer import tiny_vocab_size

    if kind not in TINY_KINDS:
        raise UserError(f"unknown tiny model kind '{kind}'; choose one of: {', '.join(TINY_KINDS)}")
    moe = kind.startswith("moe")
    pad_id, eos_id = tokenizer.convert_tokens_to_ids("<|endoftext|>"), tokenizer.convert_tokens_to_ids("<|im_end|>")
    text = _text_config(tiny_vocab_size(tokenizer), moe, pad_id, eos_id)
    if kind in ("dense", "moe"):
        config = (Qwen3_5MoeTextConfig if moe else Qwen3_5TextConfig)(**text)
        config.architectures = ["Qwen3_5MoeForCausalLM" if moe else "Qwen3_5ForCausalLM"]
    else:
        ids = {
            "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
            "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
            "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
            "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        }
        config = (Qwen3_5MoeConfig if moe else Qwen3_5Config)(
            text_config=text, vision_config=_vision_config(text["hidden_size"]), tie_word_embeddings=False, **ids
        )
        config.architectures = ["Qwen3_5MoeForConditionalGeneration" if moe else "Qwen3_5ForConditionalGeneration"]
    return config


def keep_fp32_params(model) -> None:
    """Cast the GDN parameters real checkpoints store in fp32 back to fp32 after a bf16 cast."""
    for name, param in model.named_parameters():
        if name.endswith(FP32_PARAM_SUFFIXES):
            param.data = param.data.float()


def write_tiny_checkpoint(kind: str, out_dir: str | os.PathLike, dtype: str = "float32", seed: int = 0) -> Path:
    """Build a tiny model + tokenizer (+ processor for vision kinds) and save them like a hub checkpoint."""
    import torch
    import transformers

    from qwen35_tune.models.tiny_tokenizer import build_tiny_tokenizer

    out = Path(out_dir)
    tokenizer = build_tiny_tokenizer()
    config = build_tiny_config(kind, tokenizer)
    torch.manual_seed(seed)
    model_cls = getattr(transformers, config.architectures[0])
    model = model_cls(config).to(dtype=getattr(torch, dtype))
    if dtype != "float32":
        keep_fp32_params(model)
    model.generation_config.eos_token_id = [config.get_text_config().eos_token_id]
    model.generation_config.pad_token_id = config.get_text_config().pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if kind in ("vision", "moe-vision"):
        _save_tiny_processor(tokenizer, out)
    (out / "tiny_kit.json").write_text(json.dumps({"kind": kind, "kit_version": KIT_VERSION, "dtype": dtype}))
    return out


def _save_tiny_processor(tokenizer, out: Path) -> None:
    """Save a Qwen3.5 processor (patch 16, mean/std 0.5: Qwen3.5's, not Qwen2-VL's defaults) if torchvision works."""
    try:
        from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor
    except Exception as exc:  # torchvision missing or mismatched: the vision issue handles this case loudly
        log.warning("tiny vision checkpoint written without a processor: %s", exc)
        return
    pixels = {"shortest_edge": 32 * 32, "longest_edge": 256 * 256}
    image = Qwen2VLImageProcessor(size=pixels, **QWEN35_VISION)
    video = Qwen3VLVideoProcessor(size=pixels, **QWEN35_VISION)
    processor = Qwen3VLProcessor(
        image_processor=image, tokenizer=tokenizer, video_processor=video, chat_template=tokenizer.chat_template
    )
    processor.save_pretrained(out)


def tiny_cache_root() -> Path:
    """Where tiny checkpoints are cached: $QWEN35_TUNE_CACHE or ~/.cache/qwen35_tune."""
    return Path(os.environ.get("QWEN35_TUNE_CACHE", Path.home() / ".cache" / "qwen35_tune")) / "tiny"


def _cache_key(kind: str) -> str:
    import transformers

    from qwen35_tune.models import tiny_tokenizer

    corpus = (Path(tiny_tokenizer.__file__).parent.parent / "assets" / "tokenizer_corpus.txt").read_bytes()
    template = tiny_tokenizer.load_chat_template().encode()
    digest = hashlib.sha256(corpus + template + KIT_VERSION.encode() + transformers.__version__.encode())
    return f"{kind}-{digest.hexdigest()[:12]}"


def resolve_tiny(name_or_path: str) -> Path:
    """Turn ``tiny://KIND`` into a cached checkpoint folder, building it atomically on first use."""
    kind = name_or_path[len(TINY_SCHEME) :]
    if kind not in TINY_KINDS:
        choices = ", ".join(TINY_SCHEME + k for k in TINY_KINDS)
        raise UserError(f"unknown tiny model '{name_or_path}'; choose one of: {choices}")
    final = tiny_cache_root() / _cache_key(kind)
    if (final / "tiny_kit.json").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=final.parent))
    try:
        write_tiny_checkpoint(kind, tmp)
        try:
            os.rename(tmp, final)  # atomic: a concurrent builder either wins or finds ours complete
        except OSError:
            if not (final / "tiny_kit.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("built tiny checkpoint %s at %s", name_or_path, final)
    return final
