"""`qwen35-tune chat` and `qwen35-tune generate` on tiny models: streamed replies, the thinking switch, history
without old reasoning, the REPL driven through a pseudo-terminal (one subprocess, on a run with only an adapter),
and a prompts file with good and bad rows."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwen35_tune.cli import main
from tests.smoke.export_kit import make_adapter_run

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.smoke
NO_THINK = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
THINK = "<|im_start|>assistant\n<think>\n"


@pytest.fixture(scope="module")
def dense_model(tiny_dense):
    """The tiny dense model and tokenizer, loaded once as `chat` loads them."""
    from qwen35_tune.infer.source import open_model

    model, tokenizer, what = open_model(tiny_dense)
    assert what == f"model {tiny_dense}"
    return model, tokenizer


def _session(dense_model, **settings):
    from qwen35_tune.infer.chat import ChatSession

    chunks: list[str] = []
    model, tokenizer = dense_model
    return ChatSession(model, tokenizer, chunks.append, temperature=0, **settings), chunks


def test_chat_streams_the_reply_and_keeps_the_turn(dense_model):
    session, chunks = _session(dense_model, thinking=False, max_new_tokens=16)
    generation = session.reply("Hello, how are you today?")
    assert len(chunks) > 2  # written piece by piece while generating, not once at the end
    assert "".join(chunks).startswith(generation.text)
    assert session.history == [{"role": "user", "content": "Hello, how are you today?"},
                                {"role": "assistant", "content": generation.answer}]
    second = session.render("And then?")
    assert generation.answer.strip() in second and second.endswith(NO_THINK)  # history kept, thinking still off


def test_thinking_switch_and_reasoning_left_out_of_history(dense_model):
    session, chunks = _session(dense_model, max_new_tokens=6)
    assert session.render("q").endswith(THINK)  # the tiny template's default: thinking on
    assert session.command("/no_think") and session.render("q").endswith(NO_THINK)
    assert session.command("/think") and session.render("q").endswith(THINK)
    assert chunks == ["[thinking off: the reply answers directly]\n", "[thinking on: the reply reasons inside "
                      "<think>...</think> first]\n"]
    chunks.clear()
    cut = session.reply("Think hard: what is 3 + 4?")  # 6 tokens: stops inside <think>
    assert chunks[0] == "<think>\n" and cut.unfinished_think and cut.truncated
    assert session.history[-1] == {"role": "assistant", "content": "", "reasoning_content": cut.reasoning}
    session.history[-1] = {"role": "assistant", "content": "It is 7.", "reasoning_content": "SECRET-REASONING 3+4"}
    prompt = session.render("Thanks. And 5 + 5?")
    assert "It is 7." in prompt and "SECRET-REASONING" not in prompt  # as Qwen3.5's template drops old reasoning
    assert session.command("/reset") and session.history == []
    assert session.command("/nonsense") and "unknown command" in chunks[-1]
    assert not session.command("/exit")


def _read_until(fd: int, text: str, seen: list[str], timeout: float) -> str:
    """Read the pseudo-terminal until ``text`` appears after what was already consumed; returns the new output."""
    start, out = time.time(), ""
    while text not in out:
        if time.time() - start > timeout:
            raise AssertionError(f"no {text!r} within {timeout}s; got:\n{''.join(seen) + out}")
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            out += data.decode("utf-8", "replace")
    seen.append(out)
    return out


def test_chat_repl_through_a_pseudo_terminal_on_a_run_with_only_an_adapter(tmp_path, tiny_dense):
    run = make_adapter_run(tiny_dense, tmp_path / "run", target_modules=["q_proj", "gate_proj"],
                           task_type="CAUSAL_LM")
    controller, terminal = os.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "TERM": "dumb"}
    child = subprocess.Popen([sys.executable, "-m", "qwen35_tune", "chat", str(run), "--max-new-tokens", "8",
                              "--temperature", "0"], stdin=terminal, stdout=terminal, stderr=terminal, env=env,
                             cwd=REPO, close_fds=True, start_new_session=True)
    os.close(terminal)
    seen: list[str] = []
    try:
        banner = _read_until(controller, ">>> ", seen, timeout=300)
        assert f"its adapter {run / 'adapter'} on the base {tiny_dense}" in banner.replace("\r\n", "")
        os.write(controller, b"Hello there\n")
        assert "<think>" in _read_until(controller, ">>> ", seen, timeout=120)  # streamed, thinking on
        os.write(controller, b"/no_think\n")
        assert "thinking off" in _read_until(controller, ">>> ", seen, timeout=60)
        os.write(controller, b"How are you?\n")
        assert "<think>" not in _read_until(controller, ">>> ", seen, timeout=120)
        os.write(controller, b"/reset\n")
        assert "conversation cleared" in _read_until(controller, ">>> ", seen, timeout=60)
        os.write(controller, b"/exit\n")
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(controller)


def test_generate_writes_a_row_per_good_prompt_and_reports_bad_lines(tiny_dense, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join([
        json.dumps({"prompt": "What is 7 * 8?", "id": 1}),
        json.dumps({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                    "id": 2}),
        "{oops",
        json.dumps({"id": 4}),
        json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "late"},
                                 {"role": "user", "content": "b"}]}),
        json.dumps({"prompt": "Think about 3 + 4.", "enable_thinking": True, "output": "7", "id": 6}),
    ]) + "\n")
    argv = ["generate", str(tiny_dense), "--prompts", str(prompts), "--max-new-tokens", "6", "--temperature", "0",
            "--thinking", "off"]
    assert main([*argv, "--batch-size", "2"]) == 0
    captured = capsys.readouterr()
    for line, why in ((3, "not valid JSON"), (4, "give exactly one of"), (5, "the chat template refused")):
        assert f"{prompts}:{line}: {why}" in captured.err.replace("\n", " ")
    rows = [json.loads(line) for line in (tmp_path / "prompts.generated.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 2, 6]
    assert [r["thinking"] for r in rows] == [False, False, True]  # --thinking off, except the row's own switch
    assert rows[2]["input_output"] == "7" and rows[1]["messages"][0]["content"] == "Be brief."
    for row in rows:
        assert row["finish_reason"] in ("stop", "length") and 0 < row["new_tokens"] <= 6 and row["prompt_tokens"] > 0
    assert all(r["reasoning"] == "" for r in rows[:2])  # non-thinking: the whole reply is the answer
    if "</think>" not in rows[2]["reasoning"] and rows[2]["finish_reason"] == "length":
        assert rows[2]["output"] == "" and rows[2]["reasoning"]  # cut off while thinking: no answer yet
    single = tmp_path / "single.jsonl"
    assert main([*argv, "--batch-size", "1", "--out", str(single)]) == 0  # left-padded batches change nothing
    assert [json.loads(line)["output"] for line in single.read_text().splitlines()] == [r["output"] for r in rows]


def test_generate_with_no_usable_row_stops_before_loading_the_model(tiny_dense, tmp_path, capsys, monkeypatch):
    from qwen35_tune.models import load

    monkeypatch.setattr(load, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    prompts = tmp_path / "bad.jsonl"
    prompts.write_text('{"prompt": ""}\n')
    assert main(["generate", str(tiny_dense), "--prompts", str(prompts)]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert f"{prompts}:1: prompt must be a non-empty string" in err and "no usable rows" in err
