"""Check an exported folder against its base and the trained model before anyone publishes it.

Structure: same tensor names, shapes and dtypes as the base. Content: tensors the export touched differ from the base
(adapter merges), every other tensor is byte-identical. Behaviour: the folder reloads through the Auto class its
architectures imply, reproduces the trained model's logits on a few prompts (vision checkpoints: also an image prompt
built by the folder's own processor; tolerance enforced when the weights are fp32), and greedy generation runs. Any
failure raises UserError listing every problem found.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.export.checkpoint import open_checkpoint

log = logging.getLogger(__name__)

PROMPTS = (
    [{"role": "user", "content": "What is 12 + 30?"}],
    [{"role": "system", "content": "You are a careful assistant."}, {"role": "user", "content": "Say hello."}],
)


def auto_class_for(config):
    """The Auto class a user would load this checkpoint with (vision checkpoints are image-text-to-text)."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    archs = getattr(config, "architectures", None) or []
    return AutoModelForImageTextToText if any("ConditionalGeneration" in a for a in archs) else AutoModelForCausalLM


def _raw(tensor):
    """The tensor's stored bytes, so -0.0/+0.0 and NaN payloads count as differences too."""
    import torch

    return tensor.contiguous().reshape(-1).view(torch.uint8)


def check_tensors(out: Path, base_path: Path, touched: set[str] | None, expect_changed: bool) -> tuple[dict, list]:
    """Compare every tensor pair one at a time (memory stays at two tensors)."""
    from safetensors import safe_open

    base, merged = open_checkpoint(base_path), open_checkpoint(out)
    problems = []
    missing, extra = sorted(set(base.weight_map) - set(merged.weight_map)), sorted(set(merged.weight_map) -
                                                                                    set(base.weight_map))
    if missing:
        problems.append(f"{len(missing)} base tensors missing from the export, e.g. {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} tensors not in the base, e.g. {extra[:3]}")
    counts = {"tensors": 0, "changed": 0, "identical": 0}
    handles: dict[str, object] = {}
    for shard in base.shards:
        with safe_open(base.path / shard, "pt") as f:
            for key in f.keys():
                if key not in merged.weight_map:
                    continue
                file = merged.weight_map[key]
                handles.setdefault(file, safe_open(merged.path / file, "pt"))
                a, b = f.get_tensor(key), handles[file].get_tensor(key)
                counts["tensors"] += 1
                if a.dtype != b.dtype or a.shape != b.shape:
                    problems.append(f"{key}: {a.dtype}{tuple(a.shape)} in the base, {b.dtype}{tuple(b.shape)} here")
                    continue
                same = a.numel() == 0 or bool(_raw(a).equal(_raw(b)))
                counts["identical" if same else "changed"] += 1
                if touched is None:
                    continue
                if key in touched and same and expect_changed:
                    problems.append(f"{key}: the adapter targets it but it equals the base")
                if key not in touched and not same:
                    problems.append(f"{key}: not touched by the export but differs from the base")
    return counts, problems


def _logits(model, batches) -> list:
    """Logits per batch: a tensor of input ids, or a dict of model inputs (an image prompt with its pixels)."""
    import torch

    with torch.no_grad():
        return [model(**(b if isinstance(b, dict) else {"input_ids": b})).logits.float() for b in batches]


def image_prompt(folder: Path, config) -> tuple[dict | None, str | None]:
    """(inputs, problem): for a vision checkpoint, one image question built by the folder's own AutoProcessor.

    Serving engines load the processor next to the weights, so a vision export without working processor files is a
    problem. Text-only checkpoints get (None, None).
    """
    if getattr(config, "vision_config", None) is None:
        return None, None
    from PIL import Image, ImageDraw
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(folder)
    except (OSError, ValueError, ImportError) as exc:
        return None, f"the vision checkpoint's processor does not load: {exc}"
    if getattr(processor, "image_processor", None) is None:
        return None, ("AutoProcessor gives only a tokenizer: processor files (processor_config.json or "
                      "preprocessor_config.json) are missing, or torchvision is not installed")
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).rectangle((8, 8, 40, 40), fill=(220, 30, 30))
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the square?"}]}]
    text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[image], return_tensors="pt", return_mm_token_type_ids=True)
    return {k: v for k, v in inputs.items() if k != "attention_mask"}, None


def reference_model(run_dir: Path, base_path: Path):
    """The trained model as training left it: base + peft adapter, or the full fine-tuned weights (fp32)."""
    import torch

    from qwen35_tune.export.merge import read_run
    from qwen35_tune.models.load import load_config, model_class

    run = read_run(run_dir)
    weights = Path(run_dir) / run["weights"]
    if run["method"] == "qlora":  # what QLoRA trained: the 4-bit base (run's settings) + adapter
        from qwen35_tune.export.merge import resolved_recipe
        from qwen35_tune.export.qlora import quantized_reference

        return quantized_reference(run_dir, base_path, resolved_recipe(run_dir))
    cls = model_class(load_config(str(base_path)))
    if run["method"] == "full":
        return cls.from_pretrained(weights, dtype=torch.float32).eval()
    from peft import PeftModel

    return PeftModel.from_pretrained(cls.from_pretrained(base_path, dtype=torch.float32), weights).eval()


def check_behaviour(out: Path, run_dir: Path | None, base_path: Path, atol: float | None) -> tuple[dict, list]:
    """Reload through the Auto class, compare logits with the trained model, and generate a few tokens greedily."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, return_tensors="pt", return_dict=True)
               ["input_ids"] for p in PROMPTS]
    image, image_problem = image_prompt(out, config)
    batches = prompts + ([image] if image is not None else [])  # vision exports: also compared on an image prompt
    reference = None
    if run_dir is not None:
        ref_model = reference_model(run_dir, base_path)
        reference = _logits(ref_model, batches)
        del ref_model
    cls = auto_class_for(config)
    model = cls.from_pretrained(out, dtype=torch.float32).eval()
    report = {"auto_class": cls.__name__, "loaded_class": type(model).__name__, "image_prompt": image is not None}
    problems = [image_problem] if image_problem else []
    if config.architectures and type(model).__name__ not in config.architectures:
        problems.append(f"{cls.__name__} loaded {type(model).__name__}, not {config.architectures}")
    if reference is not None:
        diff = max((a - b).abs().max().item() for a, b in zip(_logits(model, batches), reference, strict=True))
        report.update(max_abs_logit_diff=diff, atol=atol)
        if atol is not None and not diff <= atol:
            problems.append(f"logits differ from the trained model's by {diff:.2e} (allowed {atol:.0e})")
    with torch.no_grad():
        generated = model.generate(prompts[0], max_new_tokens=8, do_sample=False)
    new = generated[0, prompts[0].shape[1]:]
    report["generation"] = tokenizer.decode(new)
    if new.numel() == 0:
        problems.append("greedy generation produced no tokens")
    return report, problems


def _exact_reference(manifest: dict, run_dir: Path) -> bool:
    """QLoRA merges match the 4-bit model only into the dequantised base with fp32 compute (else: report the diff)."""
    if manifest.get("method") != "qlora":
        return True
    from qwen35_tune.export.merge import resolved_recipe

    quant = (resolved_recipe(run_dir).get("method") or {}).get("quantization") or {}
    return manifest.get("qlora_merge_base") == "dequantized" and quant.get("bnb_4bit_compute_dtype") == "float32"


def verify_export(out: Path, base_path: Path, run_dir: Path | None = None, atol: float | None = 1e-4) -> dict:
    """Run every check on ``out``; raise UserError naming all problems, else return the report."""
    out, base_path = Path(out), Path(base_path)
    manifest_path = out / "export_manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    touched = set(manifest["touched"]) if "touched" in manifest else None
    counts, problems = check_tensors(out, base_path, touched, expect_changed=manifest.get("method") != "full")
    dtypes = set(open_checkpoint(out).dtypes().values())
    fp32_only = dtypes <= {"F32"} and (run_dir is None or _exact_reference(manifest, run_dir))
    behaviour, more = check_behaviour(out, run_dir, base_path, atol if fp32_only else None)
    report = {**counts, **behaviour, "dtypes": sorted(dtypes), "problems": problems + more}
    if report["problems"]:
        raise UserError(f"verification of {out} failed:\n  - " + "\n  - ".join(report["problems"]))
    log.info("verified %s: %d tensors (%d changed, %d identical), max |logit diff| %s", out, counts["tensors"],
             counts["changed"], counts["identical"], behaviour.get("max_abs_logit_diff", "n/a"))
    return report
