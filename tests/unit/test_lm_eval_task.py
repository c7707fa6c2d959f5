"""The generated lm-eval task over a local jsonl: its rows, its YAML and its scoring hook (our checkers)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from qwen35_tune.errors import UserError
from qwen35_tune.eval.lm_eval_suite import task_rows, write_task


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_task_rows_from_each_format(tmp_path):
    rows = task_rows(_jsonl(tmp_path / "mixed.jsonl", [
        {"question": "2+2?", "reasoning": "2+2=4", "answer": "It is 4.", "check": 4},
        {"instruction": "Translate to French.", "input": "Hello", "output": "Bonjour"},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                      {"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"}]},
    ]))
    assert rows == [{"prompt": "2+2?", "target": "4", "kind": "math"},
                    {"prompt": "Translate to French.\n\nHello", "target": "Bonjour", "kind": "text"},
                    {"prompt": "Capital of France?", "target": "Paris", "kind": "text"}]


def test_code_rows_and_unknown_columns_are_user_errors(tmp_path):
    code = {"messages": [{"role": "user", "content": "f"}, {"role": "assistant", "content": "x"}], "tests": ["a"]}
    with pytest.raises(UserError, match=r"code.jsonl:1: code rows"):
        task_rows(_jsonl(tmp_path / "code.jsonl", [code]))
    with pytest.raises(UserError, match="cannot tell the format"):
        task_rows(_jsonl(tmp_path / "odd.jsonl", [{"foo": 1}]))


def test_written_task_and_its_scoring_hook(tmp_path):
    source = _jsonl(tmp_path / "arith.jsonl", [{"question": "Half of 1?", "reasoning": "1/2", "answer": "0.5",
                                                 "check": "1/2"}])
    task_dir = tmp_path / "task"
    name = write_task("my arith", source, task_dir, max_new_tokens=32)
    assert name == "q35_my_arith"
    assert "process_results: !function q35_checks.process_results" in (task_dir / f"{name}.yaml").read_text()

    spec = importlib.util.spec_from_file_location("q35_checks", task_dir / "q35_checks.py")
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    doc = json.loads((task_dir / f"{name}.jsonl").read_text())
    assert checks.process_results(doc, ["So it is \\boxed{\\frac{1}{2}}."]) == {"exact_match": 0.0,
                                                                               "answer_match": 1.0}
    assert checks.process_results(doc, ["0.25"])["answer_match"] == 0.0
    text_doc = {"prompt": "p", "target": "Bonjour", "kind": "text"}
    assert checks.process_results(text_doc, ["bonjour!"]) == {"exact_match": 1.0, "answer_match": 1.0}
    assert checks.process_results(text_doc, ["Bonsoir"]) == {"exact_match": 0.0, "answer_match": 0.0}


def test_thinking_task_scores_only_the_answer_after_think(tmp_path):
    """In thinking mode the prompt opens <think>: an output cut off before </think> has no answer, even when its
    reasoning holds the right number (lm-eval's own split would hand the whole reasoning to the checker)."""
    source = _jsonl(tmp_path / "arith.jsonl", [{"question": "2+3?", "reasoning": "-", "answer": "5", "check": 5}])
    name = write_task("think", source, tmp_path / "task", max_new_tokens=32, thinking=True)
    spec = importlib.util.spec_from_file_location("q35_checks_think", tmp_path / "task" / "q35_checks.py")
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    doc = json.loads((tmp_path / "task" / f"{name}.jsonl").read_text())
    assert checks.process_results(doc, ["2 + 3 = 5, so the answer is 5"])["answer_match"] == 0.0  # never closed
    assert checks.process_results(doc, ["2 + 3 = 5</think>\n\nThe answer is 5."])["answer_match"] == 1.0
    assert checks.process_results(doc, ["2 + 3 = 5</think>\n\nI am not sure."])["answer_match"] == 0.0
