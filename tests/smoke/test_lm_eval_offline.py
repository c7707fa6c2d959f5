"""lm-evaluation-harness runs offline on a tiny model folder through a generated task over a local jsonl."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.smoke
lm_eval = pytest.importorskip("lm_eval")


def test_custom_task_runs_offline_and_scores_the_real_generations(tiny_dense, tmp_path):
    from lm_eval.tasks import TaskManager

    from qwen35_tune.eval.lm_eval_suite import run_lm_eval

    questions = ["What is 2 + 2?", "Name a colour.", "Say hello in French."]
    first = tmp_path / "first.jsonl"
    first.write_text("".join(json.dumps({"instruction": q, "output": "unlikely answer"}) + "\n" for q in questions))
    metrics = run_lm_eval(str(tiny_dense), "probe", jsonl=str(first), limit=3, out_dir=tmp_path / "a",
                          thinking=False, max_new_tokens=6)
    assert metrics["n"] == 3 and metrics["exact_match"] == 0.0 and metrics["task"] == "q35_probe"
    task_dir = tmp_path / "a" / "lm_eval_task"
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    assert manager.all_tasks == ["q35_probe"]  # the generated YAML is one lm-eval's own loader accepts
    samples = [json.loads(line) for line in (tmp_path / "a" / "lm_eval_q35_probe_samples.jsonl").open()]
    assert sorted(s["doc"]["prompt"] for s in samples) == sorted(questions)
    assert json.loads((tmp_path / "a" / "lm_eval_q35_probe.json").read_text())["results"]["q35_probe"]

    # Greedy decoding repeats itself: with the model's own outputs as gold answers every sample must now match,
    # which shows the harness scored the actual generations with our checker.
    second = tmp_path / "second.jsonl"
    second.write_text("".join(json.dumps({"question": s["doc"]["prompt"], "reasoning": "-", "answer": "-",
                                          "check": s["output"]}) + "\n" for s in samples))
    again = run_lm_eval(str(tiny_dense), "echo", jsonl=str(second), limit=3, out_dir=tmp_path / "b",
                        thinking=False, max_new_tokens=6)
    assert again["exact_match"] == 1.0 and again["n"] == 3


def test_custom_task_in_thinking_mode_renders_think_and_scores_only_final_answers(tiny_dense, tmp_path):
    from qwen35_tune.eval.lm_eval_suite import run_lm_eval

    source = tmp_path / "q.jsonl"
    source.write_text("".join(json.dumps({"question": q, "reasoning": "-", "answer": "-", "check": "7"}) + "\n"
                              for q in ("What is 3 + 4?", "What is 14 / 2?")))
    metrics = run_lm_eval(str(tiny_dense), "think", jsonl=str(source), limit=2, out_dir=tmp_path / "t",
                          thinking=True, max_new_tokens=4)
    samples = [json.loads(line) for line in (tmp_path / "t" / "lm_eval_q35_think_samples.jsonl").open()]
    assert all(s["prompt"].endswith("<|im_start|>assistant\n<think>\n") for s in samples)  # thinking rendered
    unfinished = [s for s in samples if "</think>" not in s["output"]]
    assert unfinished and all(s["answer_match"] == 0.0 for s in unfinished)
    assert metrics["n"] == 2
