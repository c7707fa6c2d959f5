"""Peak memory while loading Qwen3.5-35B-A3B for QLoRA: experts quantized after loading (before) vs while loading.

  python benchmarks/moe_qlora_load_peak.py [--layers 1 2] [--vocab 8192] [--device cpu|cuda]

Writes a random checkpoint with the real 35B-A3B text dims (hidden 2048, 256 experts of moe_intermediate 512, the
real Gated DeltaNet / attention shapes, fp32 A_log and gated norm) but only N layers, stored per expert
(``mlp.experts.E.gate_proj.weight`` ...) as transformers' save_pretrained writes it, one safetensors shard per layer.
Then, each in a fresh process, loads it the way ``train`` does for ``method.kind: qlora`` (bf16, bitsandbytes nf4 +
double quant, then ``quantize_moe_experts``):

- before: ``from_pretrained`` alone, the fused expert stacks quantized after the whole model is loaded (the old path);
- after:  ``qwen35_tune.models.load.load_model``, which stores each stack in 4 bit as it arrives.

Peak = the highest anonymous RSS (``RssAnon``: heap, not the page cache of the memory-mapped checkpoint) sampled every
millisecond and at every parameter the loader sets, minus the process's RSS before loading; on ``--device cuda`` also
``torch.cuda.max_memory_allocated``. With two layer counts it prints the cost of each extra layer and extrapolates
to the real 40 layers. The vocabulary is cut (embeddings and lm_head stay bf16 either way and would only add the same
constant to both); the vision tower is left out for the same reason.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path

REAL_LAYERS = 40
GiB = 2**30


def _text_config(layers: int, vocab: int) -> dict:
    shipped = json.loads(resources.files("qwen35_tune.model_configs").joinpath("qwen3_5_35b_a3b.json").read_text())
    text = {k: v for k, v in shipped["text_config"].items() if k != "layer_types"}
    interval = text["full_attention_interval"]
    layer_types = ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(layers)]
    layer_types[-1] = "full_attention"  # keep one gated-attention layer whatever N is
    text.update(num_hidden_layers=layers, vocab_size=vocab, layer_types=layer_types,
                architectures=["Qwen3_5MoeForCausalLM"], dtype="bfloat16")  # fmt: skip
    return text


def _checkpoint_tensors(model) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) as the checkpoint stores it: fused expert stacks split per expert."""
    out = {}
    for name, tensor in model.state_dict().items():
        dtype = "float32" if name.endswith(("linear_attn.A_log", "linear_attn.norm.weight")) else "bfloat16"
        prefix, _, last = name.rpartition(".")
        if last == "gate_up_proj" and prefix.endswith("mlp.experts"):
            experts, two_i, hidden = tensor.shape
            for e in range(experts):
                for part in ("gate_proj", "up_proj"):
                    out[f"{prefix}.{e}.{part}.weight"] = ((two_i // 2, hidden), dtype)
        elif last == "down_proj" and prefix.endswith("mlp.experts"):
            experts, hidden, inter = tensor.shape
            for e in range(experts):
                out[f"{prefix}.{e}.down_proj.weight"] = ((hidden, inter), dtype)
        else:
            out[name] = (tuple(tensor.shape), dtype)
    return out


def write_checkpoint(folder: Path, layers: int, vocab: int) -> Path:
    """A random checkpoint of the 35B-A3B text model with ``layers`` layers, written one layer shard at a time."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig

    text = _text_config(layers, vocab)
    folder.mkdir(parents=True, exist_ok=True)
    config = Qwen3_5MoeTextConfig(**text)
    config.architectures = ["Qwen3_5MoeForCausalLM"]
    config.save_pretrained(folder)
    with torch.device("meta"):
        meta = Qwen3_5MoeForCausalLM(config)
    tensors = _checkpoint_tensors(meta)
    shards: dict[str, list[str]] = {}
    for name in tensors:
        layer = name.split(".")[2] if name.startswith("model.layers.") else "rest"
        shards.setdefault(layer, []).append(name)
    weight_map, generator = {}, torch.Generator().manual_seed(0)
    for i, (_layer, names) in enumerate(sorted(shards.items())):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        data = {}
        for name in names:
            shape, dtype = tensors[name]
            value = torch.randn(shape, generator=generator) * (0.02 if len(shape) > 1 else 1.0)
            data[name] = value.to(getattr(torch, dtype)).contiguous()
        save_file(data, str(folder / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file))
        del data
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def _rss_anon() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakSampler:
    """Highest RssAnon seen by a 1 ms sampling thread and at every parameter registration while active."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()

    def sample(self, *_args):
        self.peak = max(self.peak, _rss_anon())

    def __enter__(self):
        from torch.nn.modules.module import register_module_parameter_registration_hook

        self._handle = register_module_parameter_registration_hook(lambda *a: self.sample())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._handle.remove()
        self.sample()


def measure(path: str, mode: str, device: str) -> dict:
    """Load ``path`` for QLoRA in this process (``mode`` before/after) and return peaks and steady sizes in bytes."""
    import torch
    from transformers import BitsAndBytesConfig

    from qwen35_tune.models.load import load_config, load_model, model_class
    from qwen35_tune.models.quantize import expert_bytes, quantize_moe_experts

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.bfloat16)
    cuda = device == "cuda"
    baseline = _rss_anon()
    started = time.perf_counter()
    with PeakSampler() as load_peak:
        if mode == "before":
            model, info = model_class(load_config(path)).from_pretrained(
                path, dtype=torch.bfloat16, quantization_config=config, output_loading_info=True)
            assert not info["missing_keys"], info["missing_keys"][:5]  # the checkpoint names are right
        else:
            model = load_model(path, "bfloat16", quantization_config=config)
    loaded_at, gpu_load_peak = _rss_anon(), torch.cuda.max_memory_allocated() if cuda else 0
    with PeakSampler() as quant_peak:
        stats = quantize_moe_experts(model, "nf4", double_quant=True)
    seconds = time.perf_counter() - started
    return {"mode": mode, "baseline": baseline, "load_peak": load_peak.peak - baseline,
            "after_load": loaded_at - baseline, "quantize_peak": quant_peak.peak - baseline,
            "final": _rss_anon() - baseline, "experts_stored": expert_bytes(model),
            "stacks_quantized_after_load": stats["stacks"], "seconds": round(seconds, 1),
            "gpu_load_peak": gpu_load_peak, "gpu_peak": torch.cuda.max_memory_allocated() if cuda else 0}  # fmt: skip


def _run_child(path: Path, mode: str, device: str) -> dict:
    env = dict(os.environ) if device == "cuda" else {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, __file__, "--child", str(path), mode, device], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _gib(n: float) -> str:
    return f"{n / GiB:7.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    results: dict[int, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="q35-load-peak-") as tmp:
        for layers in args.layers:
            path = write_checkpoint(Path(tmp) / f"l{layers}", layers, args.vocab)
            results[layers] = {mode: _run_child(path, mode, args.device) for mode in ("before", "after")}
            for mode, r in results[layers].items():
                print(f"{layers} layers x 256 experts, {mode:6s}: load peak {_gib(r['load_peak'])}, after load "
                      f"{_gib(r['after_load'])}, quantize peak {_gib(r['quantize_peak'])}, final {_gib(r['final'])}"
                      f" (stacks quantized after load: {r['stacks_quantized_after_load']}, {r['seconds']} s)"
                      + (f", GPU load peak {_gib(r['gpu_load_peak'])}, GPU peak {_gib(r['gpu_peak'])}"
                         if args.device == "cuda" else ""))  # fmt: skip
            shutil_rmtree(path)
    if len(args.layers) >= 2:
        low, high = min(args.layers), max(args.layers)
        for mode in ("before", "after"):
            peak = {n: max(results[n][mode]["load_peak"], results[n][mode]["quantize_peak"]) for n in (low, high)}
            per_layer = (peak[high] - peak[low]) / (high - low)
            real = peak[high] + per_layer * (REAL_LAYERS - high)
            print(f"{mode:6s}: peak grows {_gib(per_layer)} per layer -> ~{_gib(real)} at {REAL_LAYERS} layers "
                  "(plus embeddings, lm_head and vision tower, the same in both)")


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
