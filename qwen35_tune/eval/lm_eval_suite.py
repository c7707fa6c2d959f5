"""`--suite lm-eval:TASK`: lm-evaluation-harness over a local model folder, offline.

Without a jsonl, TASK is one of lm-eval's own tasks (its dataset must already be in the HF datasets cache when
offline). With a jsonl (a data card's file), we write a custom task YAML over it into the output folder, as
lm-eval's docs describe (`dataset_path: json` + `include_path`), so the harness does the generation, batching and
aggregation and our checkers score each output (`process_results` calls eval.math_answers / eval.text_metrics).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from qwen35_tune import strict_json
from qwen35_tune.errors import UserError

log = logging.getLogger(__name__)

THINK_END = "</think>"
# Loaded by lm-eval from the task folder (`process_results: !function q35_checks.process_results`).
# THINKING: the prompts opened <think> (the raw output is reasoning, </think>, answer); only the answer is scored.
_CHECKS_PY = '''"""Scoring for the generated qwen35-tune lm-eval task: our answer checkers, per sample."""
from qwen35_tune.eval.generate import split_reasoning
from qwen35_tune.eval.math_answers import answers_equivalent, extract_answer
from qwen35_tune.eval.text_metrics import exact_match

THINKING = __THINKING__


def process_results(doc, results):
    output = split_reasoning(results[0], THINKING)[1]
    if output is None:  # cut off inside the think block: no answer
        return {"exact_match": 0.0, "answer_match": 0.0}
    exact = exact_match(output, doc["target"])
    if doc["kind"] != "math":
        return {"exact_match": float(exact), "answer_match": float(exact)}
    predicted = extract_answer(output)
    return {"exact_match": float(exact),
            "answer_match": float(predicted is not None and answers_equivalent(predicted, doc["target"]))}
'''


def _guess_format(row: dict) -> str:
    """The data-card format a raw jsonl row is in, from its columns."""
    for keys, fmt in ((("messages",), "messages"), (("conversations",), "sharegpt"), (("question", "answer"), "cot"),
                      (("instruction", "output"), "alpaca"), (("prompt", "completion"), "prompt_completion")):
        if all(k in row for k in keys):
            return fmt
    raise UserError(f"cannot tell the format of a row with columns {sorted(row)} (expected messages, conversations, "
                    "question/answer, instruction/output or prompt/completion)")


def task_rows(jsonl: str | Path) -> list[dict]:
    """The jsonl's rows as {prompt, target, kind}: prompt = last user turn, target = `check` column or final answer."""
    from qwen35_tune.data.formats import BadRow, normalise_row
    from qwen35_tune.data.messages import text_of

    rows = []
    for number, line in enumerate(Path(jsonl).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        raw = json.loads(line)
        if raw.get("tests") or raw.get("test"):
            raise UserError(f"{jsonl}:{number}: code rows (with tests) are scored by --suite code, not lm-eval")
        try:
            messages = normalise_row(raw, _guess_format(raw))["messages"]
        except BadRow as err:
            raise UserError(f"{jsonl}:{number}: {err}") from None
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        users = [m for m in messages[:last] if m["role"] == "user"]
        if not users:
            raise UserError(f"{jsonl}:{number}: no user turn before the final answer")
        gold = raw.get("check", raw.get("gold"))
        target = str(gold) if gold is not None else text_of(messages[last]["content"])
        rows.append({"prompt": text_of(users[-1]["content"]), "target": target,
                     "kind": "math" if gold is not None else "text"})
    if not rows:
        raise UserError(f"{jsonl}: no rows")
    return rows


def write_task(name: str, jsonl: str | Path, task_dir: Path, max_new_tokens: int, thinking: bool = False) -> str:
    """Write the custom task (data, YAML, scoring hook) into ``task_dir``; returns the task name to run.
    ``thinking``: the prompts open ``<think>``, so an output is scored only after its ``</think>``."""
    import yaml

    task = "q35_" + re.sub(r"\W+", "_", name).strip("_")  # prefixed so it never shadows a built-in task
    task_dir.mkdir(parents=True, exist_ok=True)
    data = task_dir / f"{task}.jsonl"
    with open(data, "w", encoding="utf-8") as fh:
        for row in task_rows(jsonl):
            fh.write(strict_json.dumps(row, ensure_ascii=False) + "\n")
    (task_dir / "q35_checks.py").write_text(_CHECKS_PY.replace("__THINKING__", str(bool(thinking))),
                                            encoding="utf-8")
    config = {
        "task": task, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test", "output_type": "generate_until", "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{target}}",
        "generation_kwargs": {"until": ["<|im_end|>"], "max_gen_toks": max_new_tokens, "do_sample": False},
        "process_results": "__PROCESS_RESULTS__",
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                        for m in ("answer_match", "exact_match")],
        "metadata": {"version": 1.0, "source": str(jsonl)},
    }
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    # `!function` is lm-eval's YAML tag for a Python hook; safe_dump cannot emit custom tags, so splice it in.
    text = re.sub(r"'?__PROCESS_RESULTS__'?", "!function q35_checks.process_results", text)
    (task_dir / f"{task}.yaml").write_text(text, encoding="utf-8")
    return task


def run_lm_eval(model_dir: str, task: str, *, jsonl: str | None, limit: int | None, out_dir, thinking: bool = True,
                max_new_tokens: int = 512, batch_size: int = 8) -> dict:
    """Run lm-eval ``task`` (or a custom task over ``jsonl``) on the model in ``model_dir``; writes the harness's
    results and per-sample outputs under ``out_dir`` and returns the task's metrics ({metric: value, ..., n})."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError("lm-eval is not installed (pip install 'qwen35-tune[eval]')") from None
    import torch

    out = Path(out_dir)
    task_dir = out / "lm_eval_task"
    name = write_task(task, jsonl, task_dir, max_new_tokens, thinking) if jsonl else task
    # Indexing lm-eval's ~10k built-in task files takes seconds; a custom task needs none of them.
    manager = TaskManager(include_path=str(task_dir), include_defaults=False) if jsonl else TaskManager()
    if name not in manager.all_tasks:
        raise UserError(f"lm-eval has no task '{task}' (give --card to build one over a local jsonl)")
    # lm-eval's think_end_token split keeps the whole reasoning as the "answer" when </think> never came (budget
    # hit mid-thought; lm_eval.models.utils.postprocess_generated_text, 0.4.x), so our own task gets the raw output
    # (thinking switched through chat_template_args) and splits it in q35_checks; lm-eval's own tasks keep its split.
    thinking_args = ({"chat_template_args": {"enable_thinking": thinking}} if jsonl else
                     {"enable_thinking": thinking, "think_end_token": THINK_END if thinking else None})
    model = HFLM(pretrained=str(model_dir), device="cuda" if torch.cuda.is_available() else "cpu",
                 batch_size=batch_size, dtype="auto", **thinking_args)
    try:
        results = lm_eval.simple_evaluate(model=model, tasks=[name], task_manager=manager, limit=limit,
                                          apply_chat_template=True, log_samples=True)
    except (ConnectionError, OSError) as err:  # datasets' offline failures are ConnectionError / OSError
        raise UserError(f"lm-eval task '{task}' could not load its data offline ({err}); give --card to run it "
                        "over a local jsonl") from None
    return _write_results(results, name, out)


def _prompt_of(sample: dict) -> str | None:
    """The rendered prompt of a harness sample (its first request's context), when the harness kept it."""
    arguments = sample.get("arguments")
    first = arguments[0] if isinstance(arguments, (list, tuple)) and arguments else None
    return first[0] if isinstance(first, (list, tuple)) and first and isinstance(first[0], str) else None


def _write_results(results: dict, name: str, out: Path) -> dict:
    """lm_eval_<task>.json (harness results + config) and lm_eval_<task>_samples.jsonl; returns the metrics."""
    out.mkdir(parents=True, exist_ok=True)
    samples = results.get("samples", {}).get(name, [])
    with open(out / f"lm_eval_{name}_samples.jsonl", "w", encoding="utf-8") as fh:
        for s in samples:
            fh.write(strict_json.dumps({"doc": s["doc"], "prompt": _prompt_of(s), "target": s["target"],
                                 "output": s["resps"][0][0],
                                 "filtered": s["filtered_resps"][0], **{k: s[k] for k in s.get("metrics", [])}},
                                ensure_ascii=False, default=str) + "\n")
    keep = {k: results[k] for k in ("results", "configs", "versions", "n-samples") if k in results}
    (out / f"lm_eval_{name}.json").write_text(strict_json.dumps(keep, indent=2, default=str), encoding="utf-8")
    metrics = {}
    for key, value in results["results"][name].items():
        if "," in key and isinstance(value, (int, float)):
            metric, _filter = key.split(",", 1)
            metrics[metric] = float(value)
    metrics["n"] = len(samples)
    metrics["task"] = name
    return metrics
