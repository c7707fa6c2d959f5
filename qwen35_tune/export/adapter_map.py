"""Map a saved peft LoRA/DoRA adapter onto the base checkpoint's own tensor names, and apply it one tensor at a time.

Why by hand: peft merges only into a fully loaded model (``merge_and_unload``), which needs the whole model in memory
and then loses what the model class did not load (``mtp.*``). Adapter keys name *modules of the training model*,
which differ from checkpoint keys in two Qwen3.5 ways this module resolves:
- text-only classes load ``model.language_model.*`` as ``model.*`` (transformers' ``qwen3_5_text`` prefix change);
- routed experts are one fused 3-D parameter in the model (``mlp.experts.gate_up_proj`` [E, 2I, H],
  ``mlp.experts.down_proj`` [E, H, I]) but per-expert ``experts.{e}.gate_proj/up_proj/down_proj.weight`` in the
  checkpoint (transformers' ``qwen2_moe`` conversion: gate rows first, then up rows).
peft's layouts mirrored here (peft 0.21 ``lora/layer.py``): Linear delta = scaling * B @ A; ``ParamWrapper`` on a
3-D [E, out, in] parameter stores A as [r*E, in] (expert-major) and B as [out, r*E] (expert-minor), nested wrappers
appear as ``<module>.base_layer``; embedding delta = (B @ A).T; DoRA rescales rows of W + delta to the magnitude.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.registry import FUSED_EXPERT_PIECES

ADAPTER_WEIGHTS = "adapter_model.safetensors"
_LORA_KEY = re.compile(r"^(?P<module>.+?)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B|"
                       r"lora_magnitude_vector)(?:\.weight)?$")


@dataclass(frozen=True)
class Update:
    """One change to one base tensor: a (slice of a) LoRA delta, a DoRA rescale, or a full replacement."""

    kind: str  # "lora" | "embedding" | "dora" | "replace"
    a_key: str = ""
    b_key: str = ""
    magnitude_key: str = ""
    scaling: float = 1.0
    num_experts: int = 1
    expert: int | None = None
    rows: tuple[int, int] | None = None  # row range of the expert delta (gate half / up half of gate_up_proj)
    transpose: bool = False


def _strip(key: str) -> str:
    return key.removeprefix("base_model.model.")


def _candidates(name: str) -> list[str]:
    """Checkpoint spellings of a training-model parameter name (text-only classes drop ``language_model``)."""
    out = [name]
    if name.startswith("model.language_model."):
        out.append("model." + name[len("model.language_model."):])
    elif name.startswith("model."):
        out.append("model.language_model." + name[len("model."):])
    return out


def _resolve(name: str, shapes: dict[str, tuple]) -> str | None:
    return next((c for c in _candidates(name) if c in shapes), None)


def _orientation(targets: list[tuple], in_features: int, out_features: int) -> bool | None:
    """False if the target stores [out, in] per expert, True if [in, out], None if the sizes do not fit."""
    if not targets:
        return None
    if targets[0][3] is None:  # stored fused (or a plain 2-D parameter)
        shape = tuple(targets[0][2])
        if shape == (out_features, in_features):
            return False
        return True if shape == (in_features, out_features) else None
    first = [t for t in targets if t[1] == 0]
    fits = sum(t[2][0] for t in first) == out_features and all(t[2][1] == in_features for t in first)
    return False if fits else None


class AdapterPlan:
    """Which base tensors an adapter changes and how; ``apply`` merges into one fp32 tensor at a time."""

    def __init__(self, adapter_dir: Path, base_shapes: dict[str, tuple]):
        from safetensors import safe_open

        self.adapter_dir = Path(adapter_dir)
        path = self.adapter_dir / ADAPTER_WEIGHTS
        if not path.exists():
            raise UserError(f"{self.adapter_dir} holds no {ADAPTER_WEIGHTS}; is it a peft adapter folder?")
        self.config = json.loads((self.adapter_dir / "adapter_config.json").read_text())
        self._file = safe_open(path, "pt")
        self.shapes = {k: tuple(self._file.get_slice(k).get_shape()) for k in self._file.keys()}
        self.updates: dict[str, list[Update]] = {}
        self._plan(base_shapes)

    # ---- planning -------------------------------------------------------------------------------------------
    def _pattern(self, name: str, module: str, default):
        """peft's rank_pattern / alpha_pattern lookup for one module (peft's own matcher)."""
        from peft.utils.other import get_pattern_key

        patterns = self.config.get(name) or {}
        key = get_pattern_key(patterns.keys(), module)
        return patterns.get(key, default)

    def _rank(self, module: str) -> int:
        return self._pattern("rank_pattern", module, self.config["r"])

    def _scaling(self, module: str, rank: int) -> float:
        alpha = self._pattern("alpha_pattern", module, self.config["lora_alpha"])
        return alpha / (rank**0.5 if self.config.get("use_rslora") else rank)

    def _add(self, base_key: str, update: Update) -> None:
        self.updates.setdefault(base_key, []).append(update)

    def _plan(self, base_shapes: dict[str, tuple]) -> None:
        groups: dict[str, dict[str, str]] = {}
        for key in self.shapes:
            match = _LORA_KEY.match(_strip(key))
            if match:
                groups.setdefault(match["module"], {})[match["part"]] = key
            else:
                self._plan_replace(key, base_shapes)
        unresolved = []
        for module, parts in sorted(groups.items()):
            if not self._plan_module(module, parts, base_shapes):
                unresolved.append(module)
        if unresolved:
            raise UserError("adapter modules with no matching tensor in the base checkpoint (wrong --base?): "
                            + ", ".join(unresolved[:5]) + (" ..." if len(unresolved) > 5 else ""))

    def _plan_replace(self, key: str, base_shapes: dict[str, tuple]) -> None:
        """modules_to_save / trained biases are stored whole: they replace the base tensor."""
        name = _strip(key).replace(".modules_to_save", "")
        base_key = _resolve(name, base_shapes)
        if base_key is None:
            raise UserError(f"adapter tensor '{key}' has no counterpart '{name}' in the base checkpoint")
        self._add(base_key, Update("replace", a_key=key))

    def _plan_module(self, module: str, parts: dict[str, str], base_shapes: dict[str, tuple]) -> bool:
        owner = re.sub(r"(\.base_layer)+$", "", module)
        rank = self._rank(owner)
        scaling = self._scaling(owner, rank)
        if "lora_embedding_A" in parts:
            base_key = _resolve(owner + ".weight", base_shapes)
            if base_key:
                self._add(base_key, Update("embedding", parts["lora_embedding_A"], parts["lora_embedding_B"],
                                           scaling=scaling))
            return base_key is not None
        base_key = _resolve(owner + ".weight", base_shapes)
        if base_key and module == owner and len(base_shapes[base_key]) == 2:
            kind = "dora" if "lora_magnitude_vector" in parts else "lora"
            self._add(base_key, Update(kind, parts["lora_A"], parts["lora_B"], parts.get("lora_magnitude_vector", ""),
                                       scaling=scaling))
            return True
        return self._plan_parameter(owner, parts, rank, scaling, base_shapes)

    def _plan_parameter(self, owner: str, parts: dict, rank: int, scaling: float, base_shapes: dict) -> bool:
        """A ``target_parameters`` adapter: find which parameter of ``owner`` it adapts by its in/out sizes."""
        in_features, out_features = self.shapes[parts["lora_A"]][1], self.shapes[parts["lora_B"]][0]
        num_experts = self.shapes[parts["lora_A"]][0] // rank
        names = {t.rsplit(".", 1)[-1] for t in self.config.get("target_parameters") or []}
        for name in sorted(names):
            targets = self._parameter_targets(f"{owner}.{name}", num_experts, base_shapes)
            transpose = _orientation(targets, in_features, out_features)
            if transpose is None:
                continue  # this parameter of the module has other sizes: the adapter is for its sibling
            for base_key, expert, _shape, rows in targets:
                self._add(base_key, Update("lora", parts["lora_A"], parts["lora_B"], scaling=scaling,
                                           num_experts=num_experts, expert=expert, rows=rows, transpose=transpose))
            return True
        return False

    @staticmethod
    def _parameter_targets(name: str, num_experts: int, base_shapes: dict) -> list[tuple]:
        """(base_key, expert, per-expert shape, rows) for a fused parameter stored fused or per expert."""
        fused = _resolve(name, base_shapes)
        if fused:
            shape = base_shapes[fused]
            if len(shape) == 3 and shape[0] == num_experts:
                return [(fused, None, shape[1:], None)]
            return [(fused, None, shape, None)] if num_experts == 1 else []
        head, _, param = name.rpartition(".")
        pieces = FUSED_EXPERT_PIECES.get(param)
        if not pieces:
            return []
        out = []
        for expert in range(num_experts):
            start = 0
            for piece in pieces:
                key = _resolve(f"{head}.{expert}.{piece}.weight", base_shapes)
                if key is None:
                    return []
                rows = base_shapes[key][0]
                out.append((key, expert, base_shapes[key], (start, start + rows)))
                start += rows
        return out

    # ---- applying -------------------------------------------------------------------------------------------
    def _tensor(self, key: str):
        return self._file.get_tensor(key).float()

    def _delta(self, update: Update):
        import torch

        a, b = self._tensor(update.a_key), self._tensor(update.b_key)
        if update.kind == "embedding":
            return (b @ a).T * update.scaling
        if update.expert is None and update.num_experts == 1:
            delta = b @ a
        else:
            rank = a.shape[0] // update.num_experts
            experts = range(update.num_experts) if update.expert is None else [update.expert]
            slices = [b.reshape(b.shape[0], rank, update.num_experts)[:, :, e] @ a.reshape(-1, rank, a.shape[1])[e]
                      for e in experts]
            delta = slices[0] if update.expert is not None else torch.stack(slices)
        delta = delta * update.scaling
        if update.transpose:
            delta = delta.transpose(-2, -1)
        if update.rows is not None:
            delta = delta[update.rows[0]:update.rows[1]]
        return delta

    def apply(self, base_key: str, weight):
        """The merged tensor for ``base_key``: fp32 arithmetic, returned in the base tensor's dtype."""
        merged = weight.float()
        for update in self.updates[base_key]:
            if update.kind == "replace":
                merged = self._tensor(update.a_key)
                continue
            delta = self._delta(update)
            if update.kind == "dora":
                combined = merged + delta
                norm = combined.norm(p=2, dim=1)
                merged = (self._tensor(update.magnitude_key) / norm).view(-1, 1) * combined
            else:
                merged = merged + delta
        return merged.to(weight.dtype).contiguous()
