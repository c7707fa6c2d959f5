"""What `chat` and `generate` read before any model loads: which weights a path means (said in words), and the
prompt rows of a jsonl file, bad ones reported with their line number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen35_tune.errors import UserError
from qwen35_tune.infer.batch import default_out, output_row, read_prompt_rows
from qwen35_tune.infer.source import describe, find_source


def _run(tmp_path: Path, merged: bool) -> Path:
    run, base = tmp_path / "run", tmp_path / "base"
    (run / "adapter").mkdir(parents=True)
    base.mkdir()
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    (run / "run.json").write_text(json.dumps({"base_model": "tiny://dense", "base_path": str(base),
                                              "method": "lora", "weights": "adapter"}))
    if merged:
        (run / "merged").mkdir()
        (run / "merged" / "config.json").write_text("{}")
    return run


def test_a_run_prefers_its_merged_model_and_says_which_weights_answer(tmp_path):
    assert describe(find_source(_run(tmp_path / "a", merged=True))).endswith("its merged model " +
                                                                            str(tmp_path / "a/run/merged"))
    adapter_only = describe(find_source(_run(tmp_path / "b", merged=False)))
    assert f"its adapter {tmp_path / 'b/run/adapter'} on the base {tmp_path / 'b/base'}" in adapter_only
    assert describe(find_source(tmp_path / "b/run/adapter")).startswith("adapter ")
    assert describe(find_source(tmp_path / "a/run/merged")) == f"model {tmp_path / 'a/run/merged'}"
    with pytest.raises(UserError, match="no such folder"):
        find_source(tmp_path / "missing")


def test_prompt_rows_are_read_and_bad_rows_reported_with_their_line(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [json.dumps({"prompt": "Hi", "id": 1}),
             "",
             "{not json",
             json.dumps({"id": 4}),
             json.dumps({"prompt": "x", "enable_thinking": "yes"}),
             json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
             json.dumps({"messages": [{"role": "user", "content": [{"type": "image", "image": "a.png"}]}]}),
             json.dumps(["a", "list"]),
             json.dumps({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}],
                         "enable_thinking": False})]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe\n")
    rows, problems = read_prompt_rows(path)
    assert [(r.line, r.thinking) for r in rows] == [(1, None), (9, False)]
    assert rows[0].messages == [{"role": "user", "content": "Hi"}] and rows[1].messages[0]["role"] == "system"
    assert [p.split(": ", 1)[0] for p in problems] == [f"{path}:{n}" for n in (3, 4, 5, 6, 7, 8, 10)]
    for fragment in ("not valid JSON", "exactly one of 'prompt'", "enable_thinking must be true or false",
                     "the last message must be the user's", "text only", "JSON object", "not UTF-8"):
        assert any(fragment in p for p in problems), fragment


def test_output_rows_keep_the_input_and_never_overwrite_it(tmp_path):
    from qwen35_tune.eval.generate import Generation

    rows, _ = read_prompt_rows(_write(tmp_path / "p.jsonl", {"prompt": "Q", "output": "the reference", "id": 3}))
    generation = Generation(text="r</think>\n\nA", answer="A", new_tokens=5, truncated=False, reasoning="r")
    row = output_row(rows[0], "<|im_start|>assistant\n<think>\n", generation, prompt_tokens=9)
    assert row == {"prompt": "Q", "input_output": "the reference", "id": 3, "output": "A", "reasoning": "r",
                   "thinking": True, "finish_reason": "stop", "prompt_tokens": 9, "new_tokens": 5}
    assert default_out(Path("data/q.jsonl")) == Path("data/q.generated.jsonl")


def _write(path: Path, *rows: dict) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
