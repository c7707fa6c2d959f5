"""Read and write safetensors checkpoints shard by shard, so exports never hold more than one shard in memory.

transformers' ``save_pretrained`` writes only the tensors the model class loaded (Qwen3.5's ``mtp.*`` are
dropped) and re-lays them out; exporting by streaming the base checkpoint's own shards keeps its layout, names,
dtypes and every tensor the model class ignores.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qwen35_tune.errors import UserError

log = logging.getLogger(__name__)

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class Checkpoint:
    """A local safetensors checkpoint: which shard holds each tensor, and the shard order."""

    path: Path
    weight_map: dict[str, str]
    index_metadata: dict

    @property
    def shards(self) -> list[str]:
        """Shard file names in first-appearance order of the index (stable output order)."""
        return list(dict.fromkeys(self.weight_map.values()))

    def dtypes(self) -> dict[str, str]:
        """Stored dtype of every tensor ('BF16', 'F32', ...) read from the shard headers, no tensor data loaded."""
        from safetensors import safe_open

        out: dict[str, str] = {}
        for shard in self.shards:
            with safe_open(self.path / shard, "pt") as f:
                for key in f.keys():
                    out[key] = f.get_slice(key).get_dtype()
        return out


def open_checkpoint(path: str | Path) -> Checkpoint:
    """The shard map of a local folder with ``model.safetensors`` or a sharded index; a clear error otherwise."""
    from safetensors import safe_open

    path = Path(path)
    if (path / INDEX).exists():
        index = json.loads((path / INDEX).read_text())
        return Checkpoint(path, dict(index["weight_map"]), dict(index.get("metadata", {})))
    if (path / SINGLE).exists():
        with safe_open(path / SINGLE, "pt") as f:
            return Checkpoint(path, {key: SINGLE for key in f.keys()}, {})
    raise UserError(f"{path} has no safetensors weights ({SINGLE} or {INDEX}); exports stream the base's safetensors")


def download_checkpoint(name_or_path: str, revision: str | None = None, key: str | None = None) -> Path:
    """A local folder for a hub id (weights, config, tokenizer and processor files only), or the path itself.

    ``key`` names the setting the id came from in the error a missing folder or an uncached id offline raises."""
    if Path(name_or_path).exists():
        return Path(name_or_path)
    from huggingface_hub import snapshot_download

    from qwen35_tune.models.source_errors import checkpoint_source

    patterns = ["*.safetensors", "*.json", "*.jinja", "*.txt", "*.model", "README.md", "LICENSE*"]
    with checkpoint_source(name_or_path, key, "base checkpoint"):
        return Path(snapshot_download(name_or_path, revision=revision, allow_patterns=patterns))


def iter_shard(checkpoint: Checkpoint, shard: str) -> Iterator[tuple[str, object]]:
    """(key, tensor) for every tensor of one shard, in the shard's own order."""
    from safetensors import safe_open

    with safe_open(checkpoint.path / shard, "pt") as f:
        for key in f.keys():
            yield key, f.get_tensor(key)


def shard_metadata(checkpoint: Checkpoint, shard: str) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(checkpoint.path / shard, "pt") as f:
        return dict(f.metadata() or {"format": "pt"})


def write_shard(out_dir: Path, shard: str, tensors: dict, metadata: dict[str, str]) -> int:
    """Write one shard (same file name as the base's) and return its tensor bytes for the index's total_size."""
    from safetensors.torch import save_file

    save_file(tensors, str(out_dir / shard), metadata=metadata)
    return sum(t.numel() * t.element_size() for t in tensors.values())


def write_index(out_dir: Path, weight_map: dict[str, str], total_size: int, metadata: dict) -> None:
    """A fresh index for a multi-shard export (total_size recomputed from what was written)."""
    index = {"metadata": {**metadata, "total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / INDEX).write_text(json.dumps(index, indent=2) + "\n")


def raw_bytes(tensor):
    """The tensor's stored bytes, so -0.0/+0.0 and NaN payloads count as differences too."""
    import torch

    return tensor.contiguous().reshape(-1).view(torch.uint8)
