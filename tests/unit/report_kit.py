"""A run directory built without training, for the report tests: the recipe (an extends chain plus an override),
data stats, quarantine and rendered rows from the real data build on a card with planted rows (a reasoning row, a
tool row, bad rows, HTML in rows), and metrics, preflight, eval results, a merged export and its verification as
training, eval and merge write them."""

from __future__ import annotations

import json
import math
from pathlib import Path

from qwen35_tune.data.build import build_datasets
from qwen35_tune.recipe import load_recipe
from qwen35_tune.report.environment import environment_record
from qwen35_tune.rundir import RunDir, RunRecord

HOSTILE = '<script>alert("owned")</script><img src="http://example.invalid/x.png"><b>bold?</b>'
# Rows of the card, by line: the report must show the bad ones with these lines and render the good ones.
GOOD = {"messages": [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "2 + 2 = 4."}]}
THINKING = {"messages": [{"role": "user", "content": "What is 6 * 7?"},
                         {"role": "assistant", "content": "6 * 7 = 42.",
                          "reasoning_content": "Six sevens: 7, 14, 21, 28, 35, 42."}]}
TOOL = {"tools": [{"type": "function", "function": {"name": "lookup", "description": "Look a word up.",
                                                    "parameters": {"type": "object",
                                                                   "properties": {"q": {"type": "string"}}}}}],
        "messages": [{"role": "user", "content": "Define ketch."},
                     {"role": "assistant", "content": "",
                      "tool_calls": [{"type": "function", "function": {"name": "lookup",
                                                                       "arguments": {"q": "ketch"}}}]},
                     {"role": "tool", "content": "ketch: a two-masted sailing boat"},
                     {"role": "assistant", "content": "A ketch is a two-masted sailing boat."}]}
HTML_ROW = {"messages": [{"role": "user", "content": f"Explain {HOSTILE}"},
                         {"role": "assistant", "content": f"It is markup: {HOSTILE}"}]}
BAD_LINES = {  # line number -> raw line (quarantined)
    4: "{not json at all",
    6: json.dumps({"messages": [{"role": "bot", "content": HOSTILE}]}),
    9: json.dumps({"messages": "a string, not a list"}),
}


def write_card(folder: Path) -> Path:
    """A card of 10 lines: good, reasoning, tool and HTML rows around the BAD_LINES."""
    good = [GOOD, THINKING, HTML_ROW, TOOL, GOOD, GOOD, GOOD]
    lines = []
    for number in range(1, 11):
        lines.append(BAD_LINES[number] if number in BAD_LINES else json.dumps(good.pop(0)))
    (folder / "planted.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "planted.yaml").write_text("name: planted\nlicense: mit\nsource: {path: planted.jsonl}\n"
                                         "format: messages\nmax_bad_fraction: 0.5\n")
    return folder / "planted.yaml"


def write_recipes(folder: Path) -> Path:
    """base.yaml (model, method, train) extended by child.yaml (name, data, a train value); returns the child."""
    (folder / "base.yaml").write_text(
        "name: base\nmodel:\n  name_or_path: tiny://dense\n  dtype: float32\nmethod:\n  kind: lora\n"
        "  lora:\n    r: 8\ntrain:\n  learning_rate: 1.0e-3\n  max_length: 1024\n")
    (folder / "child.yaml").write_text(
        f"extends: base.yaml\nname: report-kit\ndescription: 'A recipe {HOSTILE}'\ndata:\n  cards:\n"
        "    - path: planted.yaml\n      weight: 2.0\nchat:\n  thinking: true\ntrain:\n  logging_steps: 1\n")
    return folder / "child.yaml"


def metrics_lines(rows: int) -> str:
    """``rows`` metric records as training logs them (loss falling with noise and one spike, lr warmup, time)."""
    lines, tokens, start = [], 0, 1_700_000_000.0
    for step in range(1, rows + 1):
        tokens += 900 + step % 50
        spike = 4.0 if step == rows // 2 else 0.0
        loss = 3.0 * math.exp(-step / max(rows / 4, 1)) + 0.5 + 0.05 * math.sin(step) + spike
        record = {"step": step, "epoch": step / rows, "time": start + step * 0.5, "loss": loss,
                  "grad_norm": 1.0 + 0.3 * math.cos(step / 7), "learning_rate": 1e-3 * min(1.0, step / 10),
                  "num_tokens": float(tokens), "mean_token_accuracy": min(0.9, step / rows)}
        lines.append(json.dumps(record))
        if step % max(rows // 5, 1) == 0:
            lines.append(json.dumps({"step": step, "epoch": step / rows, "time": start + step * 0.5,
                                     "eval_loss": loss + 0.1, "gen_eval/math/thinking/accuracy": step / rows / 2,
                                     "gen_eval/math/thinking/n": 10}))
    lines.append(json.dumps({"step": rows, "epoch": 1.0, "time": start + rows * 0.5 + 1, "train_runtime": rows * 0.5,
                             "train_samples_per_second": 8.0, "train_steps_per_second": 2.0, "total_flos": 1.5e11,
                             "train_loss": 1.2}))
    return "\n".join(lines) + "\n"


def _write_eval(run: RunDir) -> None:
    run.eval.mkdir()
    report = {"suite": "math", "kind": "math", "primary_metric": "accuracy", "rows_from": "planted (held out)",
              "n": 4, "modes": {"thinking": {"n": 4, "accuracy": 0.5, "extractable": 0.75, "mode": "thinking",
                                             "verdicts": {"correct": 2, "wrong": 1, "no-answer": 1}}},
              "contamination": {"exact_duplicates": 0, "ngram_overlapping": 0}}
    (run.eval / "math.json").write_text(json.dumps(report))
    samples = [
        {"mode": "thinking", "prompt": "What is 6 * 7?", "output": "<think>six sevens</think>42", "extracted": "42",
         "gold": "42", "verdict": "correct", "correct": True},
        {"mode": "thinking", "prompt": "What is 2 + 2?", "output": f"5 {HOSTILE}", "extracted": "5", "gold": "4",
         "verdict": "wrong", "correct": False, "detail": "5 is not 4"},
        {"mode": "thinking", "prompt": "What is 9 - 3?", "output": "<think>I", "extracted": None, "gold": "6",
         "verdict": "no-answer", "correct": False}]
    (run.eval / "math.samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))


def _write_export(run: RunDir, folder: Path) -> None:
    """A merged folder whose header differs from its base in one tensor's dtype, with manifest, card and report."""
    import numpy as np
    from safetensors.numpy import save_file

    base = folder / "base-model"
    base.mkdir()
    save_file({"a.weight": np.zeros((2, 3), np.float32), "b.weight": np.zeros(4, np.float32)},
              str(base / "model.safetensors"))
    run.merged.mkdir()
    save_file({"a.weight": np.ones((2, 3), np.float32), "b.weight": np.zeros(4, np.float16)},
              str(run.merged / "model.safetensors"))
    (run.merged / "export_manifest.json").write_text(json.dumps({"base": str(base), "method": "lora",
                                                                 "verified": True, "touched": ["a.weight"]}))
    (run.merged / "README.md").write_text(
        "---\nlicense: mit\nbase_model: tiny://dense\n---\n\n# report-kit\n\nA card with "
        f"{HOSTILE} and ![a remote image](http://example.invalid/card.png).\n\n| method | lora |\n|---|---|\n")
    run.merged_verify.write_text(json.dumps({"tensors": 2, "changed": 1, "identical": 1, "expected_changed": 1,
                                             "max_abs_logit_diff": 3.2e-5, "atol": 1e-4,
                                             "loaded_class": "Qwen3_5ForCausalLM", "generation": HOSTILE,
                                             "dtypes": ["F32", "F16"], "problems": []}))


def make_run(folder: Path, tokenizer, metric_rows: int = 40, overrides=("train.max_steps=7",)) -> RunDir:
    """The run directory ``folder/run`` (see the module doc)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_card(folder)
    recipe = load_recipe(write_recipes(folder), list(overrides))
    run = RunDir(folder / "run")
    run.path.mkdir()
    run.write_recipe(recipe)
    _, _, stats = build_datasets(recipe, tokenizer, run.path)
    tokenizer.save_pretrained(str(run.adapter))
    run.write_run(RunRecord(base_model="tiny://dense", base_path=str(folder / "base-model"), method="lora",
                            weights="adapter"))
    run.metrics_jsonl.write_text(metrics_lines(metric_rows))
    run.summary_json.write_text(json.dumps({"name": recipe.name, "model": "tiny://dense", "method": "lora",
                                            "steps": metric_rows, "train_rows": stats["train_rows"],
                                            "first_loss": 3.5, "final_loss": 0.6, "wall_seconds": 12.5,
                                            "hardware": "x86_64", "world_size": 1,
                                            "gradient_accumulation_steps": 1}))
    run.preflight_json.write_text(json.dumps({
        "model_type": "qwen3_5_text", "method": "lora", "untouched": [], "trainable_percent": 10.0,
        "groups": {"attention": {"params": 1000, "trainable": 100, "trainable_bytes": 400},
                   "mlp": {"params": 2000, "trainable": 200, "trainable_bytes": 800}},
        "total": {"params": 3000, "trainable": 300, "trainable_bytes": 1200}}))
    run.run_config_json.write_text(json.dumps({"recipe": recipe.name, "git_revision": "0123abcd",
                                               "qwen35_tune_version": "0.1.0", "seed": 42,
                                               "data_cards": [{"name": "planted", "weight": 2.0}],
                                               "kernels": {"attention": "sdpa"}}))
    run.environment_json.write_text(json.dumps(environment_record({"WORLD_SIZE": "1"})))
    _write_eval(run)
    _write_export(run, folder)
    return run
