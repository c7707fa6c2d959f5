"""Keep secrets out of what eval writes: this process's secret environment values and token-shaped strings.

Sandboxed programs cannot read the evaluator's environment, but a generation can still print a token it learned,
and a sandbox without namespaces is weaker. So every string stored in ``eval/<suite>.samples.jsonl`` loses the
values of secret-looking environment variables (and the cached Hugging Face token), and program output stored as a
verdict's detail also loses anything shaped like a known token format.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MARK = "[REDACTED]"
_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE", re.IGNORECASE)
_MIN_SECRET_LEN = 8  # shorter values ('1', 'true', a port) would redact ordinary text
_TOKEN_SHAPES = re.compile("|".join((
    r"\bhf_[A-Za-z0-9]{20,}",  # Hugging Face
    r"\bgh[pousr]_[A-Za-z0-9]{30,}", r"\bgithub_pat_[A-Za-z0-9_]{40,}",  # GitHub
    r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}",  # OpenAI / Anthropic style
    r"\bAKIA[0-9A-Z]{16}\b", r"\bASIA[0-9A-Z]{16}\b",  # AWS access key ids
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}", r"\bAIza[0-9A-Za-z_-]{35}",  # Slack, Google
    r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",  # JWT
    r"\b[0-9a-f]{40}\b",  # W&B API keys (40 hex)
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",
)))
_ASSIGNED = re.compile(r"(?i)\b([A-Z0-9_]*(?:TOKEN|API_?KEY|SECRET|PASSWORD|PASSWD)[A-Z0-9_]*)(\s*[=:]\s*)(['\"]?)"
                       r"([^\s'\"]{6,})")


def secret_values(environ=None) -> list[str]:
    """Values of secret-looking variables in ``environ`` (default: this process's) and the HF login cache token."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if _SECRET_NAME.search(k) and len(v.strip()) >= _MIN_SECRET_LEN}
    hf_home = Path(environ.get("HF_HOME") or Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") /
                   "huggingface")
    try:
        token = (hf_home / "token").read_text().strip()
    except (OSError, UnicodeDecodeError):
        token = ""
    if len(token) >= _MIN_SECRET_LEN:
        values.add(token)
    return sorted(values, key=len, reverse=True)  # longest first: a value containing another goes whole


def redact_known(text: str, values: list[str] | None = None) -> str:
    """``text`` without any known secret value (cheap enough for every stored field)."""
    if not text:
        return text
    for value in secret_values() if values is None else values:
        if value in text:
            text = text.replace(value, MARK)
    return text


def redact(text: str, values: list[str] | None = None) -> str:
    """``text`` without known secret values, token-shaped strings or ``NAME_TOKEN=value`` assignments (for program
    output, where a false positive costs nothing)."""
    if not text:
        return text
    text = _TOKEN_SHAPES.sub(MARK, redact_known(text, values))
    return _ASSIGNED.sub(lambda m: m.group(1) + m.group(2) + m.group(3) + MARK, text)
