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
