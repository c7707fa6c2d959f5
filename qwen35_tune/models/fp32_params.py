"""Keep Qwen3.5's fp32 parameters (GDN ``A_log``, gated norm weight) in fp32 when the rest loads in bf16/fp16.

``from_pretrained(dtype=torch.bfloat16)`` casts every tensor, and the Qwen3.5 classes declare no
``_keep_in_fp32_modules_strict`` in transformers 5.24, so the checkpoint's fp32 values would be rounded to bf16
(NVIDIA/Megatron-LM PR #3634 on why they are fp32). We re-read those few small tensors from the checkpoint files.

Where it does not hold: DeepSpeed with bf16 (every ZeRO stage) puts every parameter in bf16. ZeRO-3 partitions
them while loading (``zero.Init``), so there is nothing left to restore; ZeRO-1/2 cast them when the engine starts
(deepspeed 0.19 keeps only *buffers* in fp32, ``data_types.keep_in_fp32_modules``). Frozen ones (LoRA, QLoRA) are
read back once the engine exists (``restore_after_engine``) under ZeRO-1/2; trained ones (full fine-tune) live in
DeepSpeed's flat bf16 buffers, compute from bf16 values and get an fp32 master that starts from the bf16-rounded
value; under ZeRO-3 frozen ones also stay bf16. Both are logged as warnings. A merged LoRA/QLoRA export still carries
the checkpoint's fp32 values (merging reads the base checkpoint).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def _checkpoint_files(path: str, revision: str | None) -> list[Path]:
    folder = Path(path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(path, revision=revision, allow_patterns=["*.safetensors"]))
    return sorted(folder.glob("*.safetensors"))


def is_partitioned(param) -> bool:
    """A DeepSpeed ZeRO-3 parameter: its ``data`` is an empty placeholder, the values live in bf16 shards."""
    return hasattr(param, "ds_id")


def _read_fp32(params: dict, path: str, revision: str | None) -> int:
    """Set each named parameter to its checkpoint value in fp32; returns how many were found with the same shape."""
    import torch
    from safetensors import safe_open

    restored = 0
    for file in _checkpoint_files(path, revision):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118  (safe_open is not a mapping)
                param = params.get(key)
                if param is not None and tuple(param.shape) == tuple(handle.get_slice(key).get_shape()):
                    param.data = handle.get_tensor(key).to(device=param.device, dtype=torch.float32)
                    restored += 1
    return restored


def restore_fp32_params(model, path: str, suffixes: tuple[str, ...], revision: str | None = None,
                        keep: Callable[[object], bool] = lambda param: True) -> int:  # fmt: skip
    """Load every parameter ending in ``suffixes`` (and passing ``keep``) as fp32 from the checkpoint; returns how
    many were restored. ZeRO-3 partitioned parameters cannot be and are reported instead."""
    import torch

    wanted = {name: param for name, param in model.named_parameters() if name.endswith(suffixes) and keep(param)}
    partitioned = [name for name, param in wanted.items() if is_partitioned(param)]
    if partitioned:
        log.warning("DeepSpeed ZeRO-3 holds %d Qwen3.5 fp32 parameters (%s) as bf16 shards: they are not kept in "
                    "fp32 in training (they compute from bf16 values); a merged LoRA export still has the "
                    "checkpoint's fp32 values", len(partitioned), ", ".join(suffixes))  # fmt: skip
        wanted = {name: param for name, param in wanted.items() if not is_partitioned(param)}
    if not wanted or all(p.dtype == torch.float32 for p in wanted.values()):
        return 0
    restored = _read_fp32(wanted, path, revision)
    for name, param in wanted.items():  # names the checkpoint stores differently: upcast what was loaded
        if param.dtype != torch.float32:
            param.data = param.data.float()
            log.debug("%s not found in the checkpoint under that name; upcast to fp32", name)
    log.info("kept %d Qwen3.5 fp32 parameters (%s) in fp32", len(wanted), ", ".join(suffixes))
    return restored


def restore_after_engine(model, path: str, suffixes: tuple[str, ...], revision: str | None = None) -> int:
    """After DeepSpeed ZeRO-1/2 cast every parameter to bf16: read the frozen fp32 ones back (they are in no optimizer
    buffer); trained ones are part of DeepSpeed's flat bf16 groups and stay bf16 (warned). Returns how many."""
    import torch

    cast = [(n, p) for n, p in model.named_parameters() if n.endswith(suffixes) and p.dtype != torch.float32
            and not is_partitioned(p)]  # fmt: skip
    trained = [n for n, p in cast if p.requires_grad]
    if trained:
        log.warning("DeepSpeed keeps %d trained Qwen3.5 fp32 parameters (%s) in bf16: they compute from bf16 values "
                    "and their fp32 master starts from the bf16-rounded checkpoint value", len(trained),
                    ", ".join(suffixes))  # fmt: skip
    frozen = {n: p for n, p in cast if not p.requires_grad}
    if not frozen:
        return 0
    restored = _read_fp32(frozen, path, revision)
    for param in frozen.values():  # names the checkpoint stores differently: upcast what the engine left
        param.data = param.data.float()
    log.info("read %d frozen Qwen3.5 fp32 parameters back in fp32 after DeepSpeed's bf16 cast", restored)
    return restored
