"""No secret of the evaluator reaches eval/<suite>.samples.jsonl: not through a program's output, not through a
generation that happens to contain one."""

from __future__ import annotations

import json
import uuid

from qwen35_tune.eval.redact import MARK, redact, redact_known, secret_values
from qwen35_tune.eval.rows import EvalRow
from qwen35_tune.eval.runner import write_suite
from qwen35_tune.eval.suites import parse_suite, score_output

HF = "hf_" + uuid.uuid4().hex
WANDB = uuid.uuid4().hex + uuid.uuid4().hex[:8]  # 40 hex, like a W&B key


def _environ(tmp_path):
    return {"HF_TOKEN": HF, "WANDB_API_KEY": WANDB, "PORT_KEY": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}


def test_secret_values_are_the_secret_looking_variables_and_the_login_cache(tmp_path):
    (tmp_path / ".cache" / "huggingface").mkdir(parents=True)
    (tmp_path / ".cache" / "huggingface" / "token").write_text("hf_cachedtokenvalue123\n")
    values = secret_values({**_environ(tmp_path), "XDG_CACHE_HOME": str(tmp_path / ".cache")})
    assert set(values) == {HF, WANDB, "hf_cachedtokenvalue123"}  # PORT_KEY=1 is too short to be a secret


def test_redact_removes_known_values_and_token_shapes():
    text = f"env: HF_TOKEN={HF} key {WANDB}; github ghp_{'x' * 36}; aws AKIAABCDEFGHIJKLMNOP; password: hunter22xyz"
    out = redact(text, [HF, WANDB])
    for secret in (HF, WANDB, "ghp_", "AKIAABCDEFGHIJKLMNOP", "hunter22xyz"):
        assert secret not in out
    assert out.count(MARK) >= 5 and out.startswith("env: HF_TOKEN=")
    # known values only: ordinary hex (a git sha in a generation) stays
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert redact_known(f"commit {sha} with {HF}", [HF]) == f"commit {sha} with {MARK}"


def test_samples_file_never_holds_the_evaluators_secrets(tmp_path, monkeypatch):
    """The reported leak: a program printing /proc/<ppid>/environ, and a generation quoting a token."""
    monkeypatch.setenv("HF_TOKEN", HF)
    monkeypatch.setenv("WANDB_API_KEY", WANDB)
    leak = ("```python\nimport os, sys\nfor pid in (os.getppid(), 1, 'self'):\n    try:\n"
            "        sys.stderr.write(open(f'/proc/{pid}/environ').read())\n    except OSError:\n        pass\n"
            f"raise RuntimeError('{HF} ' + repr(dict(os.environ)))\n```")
    row = EvalRow(prompt=[{"role": "user", "content": "q"}], origin="t:1", tests=["assert True"])
    scored = score_output("code", leak, leak, row)
    assert scored.verdict in ("refused", "crashed")
    samples = [{"mode": "thinking", "origin": row.origin, "prompt": [], "output": leak + f" {WANDB}",
                "extracted": scored.extracted, "verdict": scored.verdict, "detail": scored.detail}]
    write_suite(tmp_path, parse_suite("code"), {"suite": "code"}, samples)
    text = (tmp_path / "code.samples.jsonl").read_text()
    assert HF not in text and WANDB not in text and MARK in text
    assert json.loads(text)["verdict"] == scored.verdict
