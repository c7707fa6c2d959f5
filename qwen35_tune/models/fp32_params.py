"""Keep Qwen3.5's fp32 parameters (GDN ``A_log``, gated norm weight) in fp32 when the rest loads in bf16/fp16.

``from_pretrained(dtype=torch.bfloat16)`` casts every tensor, and the Qwen3.5 classes declare no
``_keep_in_fp32_modules_strict`` in transformers 5.24, so the checkpoint's fp32 values would be rounded to bf16
(NVIDIA/Megatron-LM PR #3634 on why they are fp32). We re-read those few small tensors from the checkpoint files.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _checkpoint_files(path: str, revision: str | None) -> list[Path]:
    folder = Path(path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(path, revision=revision, allow_patterns=["*.safetensors"]))
    return sorted(folder.glob("*.safetensors"))


def restore_fp32_params(model, path: str, suffixes: tuple[str, ...], revision: str | None = None) -> int:
    """Load every parameter ending in ``suffixes`` as fp32 from the checkpoint; returns how many were restored."""
    import torch
    from safetensors import safe_open

    wanted = {name: param for name, param in model.named_parameters() if name.endswith(suffixes)}
    if not wanted or all(p.dtype == torch.float32 for p in wanted.values()):
        return 0
    restored = 0
    for file in _checkpoint_files(path, revision):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118  (safe_open is not a mapping)
                param = wanted.get(key)
                if param is not None and tuple(param.shape) == tuple(handle.get_slice(key).get_shape()):
                    param.data = handle.get_tensor(key).to(device=param.device, dtype=torch.float32)
                    restored += 1
    for name, param in wanted.items():  # names the checkpoint stores differently: upcast what was loaded
        if param.dtype != torch.float32:
            param.data = param.data.float()
            log.debug("%s not found in the checkpoint under that name; upcast to fp32", name)
    log.info("kept %d Qwen3.5 fp32 parameters (%s) in fp32", len(wanted), ", ".join(suffixes))
    return restored
