"""Merge a finished run's adapter into its base model and write a folder that loads like the base checkpoint.

Works on any run directory (never imports ``train``). The merge happens in fp32 (bf16 merges of MoE models flip
routing decisions) and the result is written in the base checkpoint's dtype, keeping Qwen3.5's fp32 parameters.
Before saving, the adapter model's logits on a few prompts are recorded; the saved folder is reloaded through the
matching Auto class and must reproduce them, otherwise the merge fails.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.models.load import load_config, model_class, resolve_model_path
from qwen35_tune.registry import spec_for

log = logging.getLogger(__name__)

# Processor files the base ships for vision models; copied so serving engines find them next to the weights.
_PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "processor_config.json")
_PROMPTS = (
    [{"role": "user", "content": "What is 12 + 30?"}],
    [{"role": "system", "content": "You are a careful assistant."}, {"role": "user", "content": "Say hello."}],
)


def auto_class_for(config):
    """The Auto class a user would load this checkpoint with (vision checkpoints are image-text-to-text)."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    archs = getattr(config, "architectures", None) or []
    return AutoModelForImageTextToText if any("ConditionalGeneration" in a for a in archs) else AutoModelForCausalLM


def _base_dtype(config):
    import torch

    dtype = getattr(config, "dtype", None) or getattr(config.get_text_config(), "dtype", None) or torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def _prompt_ids(tokenizer):
    return [tokenizer.apply_chat_template(p, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            ["input_ids"] for p in _PROMPTS]


def _logits(model, batches) -> list:
    import torch

    with torch.no_grad():
        return [model(input_ids=ids).logits.float() for ids in batches]


def _cast_like_base(model, dtype, fp32_suffixes: tuple[str, ...]) -> None:
    model.to(dtype)
    for name, param in model.named_parameters():
        if name.endswith(fp32_suffixes):
            param.data = param.data.float()


def _read_run(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    if not path.exists():
        raise UserError(f"{run_dir} is not a finished qwen35-tune run (no run.json); pass the run directory")
    return json.loads(path.read_text())


def merge_run(run_dir: Path, out: Path | None = None, verify: bool = True, atol: float = 1e-4) -> Path:
    """Merge ``run_dir``'s adapter (or copy its full weights) into ``out`` (default ``run_dir/merged``)."""
    import torch
    from transformers import AutoTokenizer

    run_dir = Path(run_dir)
    run = _read_run(run_dir)
    out = Path(out) if out else run_dir / "merged"
    base_path = run["base_path"] if Path(run["base_path"]).exists() else resolve_model_path(run["base_model"])
    weights = run_dir / run["weights"]
    config = load_config(base_path)
    spec = spec_for(config.model_type)
    tokenizer = AutoTokenizer.from_pretrained(weights)
    prompts = _prompt_ids(tokenizer)
    if run["method"] == "full":
        model = model_class(config).from_pretrained(weights, dtype=torch.float32)
        reference = _logits(model.eval(), prompts)
    else:
        from peft import PeftModel

        base = model_class(config).from_pretrained(base_path, dtype=torch.float32)
        adapted = PeftModel.from_pretrained(base, weights).eval()
        reference = _logits(adapted, prompts)
        model = adapted.merge_and_unload()
    dtype = _base_dtype(config)
    _cast_like_base(model, dtype, spec.fp32_params)
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)  # the tokenizer and chat template the run trained with
    for name in _PROCESSOR_FILES + ("generation_config.json",):
        if (Path(base_path) / name).exists():
            shutil.copy2(Path(base_path) / name, out / name)
    if verify:
        _verify_logits(out, config, prompts, reference, atol if dtype == torch.float32 else None)
    log.info("merged %s into %s", weights, out)
    return out


def _verify_logits(out: Path, config, prompts, reference, atol: float | None) -> float:
    """Reload the merged folder through its Auto class and compare logits with the adapter model's."""
    import torch

    merged = auto_class_for(config).from_pretrained(out, dtype=torch.float32).eval()
    diff = max((a - b).abs().max().item() for a, b in zip(_logits(merged, prompts), reference, strict=True))
    (out.parent / f"{out.name}_verify.json").write_text(json.dumps({"max_abs_logit_diff": diff, "atol": atol}))
    if atol is not None and diff > atol:
        raise UserError(f"merge verification failed: merged logits differ from the adapter model's by {diff:.2e}")
    log.info("merge verified: max |logit difference| = %.2e", diff)
    return diff
