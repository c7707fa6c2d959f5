"""What `chat` and `generate` talk to: a run directory (its merged model when there is one, else its adapter on the
base it trained from), a merged or model folder, an adapter folder, or a ``tiny://`` checkpoint; loaded the way
`eval` loads it (eval.generate), and said in words so the user knows which weights answer."""

from __future__ import annotations

from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.rundir import RunDir


def find_source(path: str | Path) -> dict:
    """``eval.generate.describe_source`` of ``path`` (``tiny://KIND`` built into the cache first)."""
    from qwen35_tune.eval.generate import describe_source
    from qwen35_tune.models.tiny import TINY_SCHEME

    if str(path).startswith(TINY_SCHEME):
        from qwen35_tune.models.load import resolve_model_path

        path = resolve_model_path(str(path))
    if not Path(path).exists():
        raise UserError(f"{path}: no such folder (give a run directory, a merged/model folder, an adapter folder or "
                        "tiny://dense)")
    return describe_source(Path(path))


def describe(source: dict) -> str:
    """One line naming the weights that will answer, e.g. 'run runs/x: its merged model runs/x/merged'."""
    weights = source["weights"]
    if source["kind"] == "run":
        if source["base"] is None:
            what = "its merged model" if Path(weights) == RunDir(source["run_dir"]).merged else "its weights"
            return f"run {source['run_dir']}: {what} {weights}"
        return f"run {source['run_dir']}: its adapter {weights} on the base {source['base']} (no merged/ folder)"
    if source["kind"] == "adapter":
        return f"adapter {weights} on the base {source['base']}"
    return f"model {weights}"


def open_model(path: str | Path, dtype: str = "auto"):
    """(model, tokenizer, description) for ``path``; the tokenizer carries the chat template trained with."""
    from qwen35_tune.eval.generate import load_eval_model, load_eval_tokenizer

    source = find_source(path)
    tokenizer = load_eval_tokenizer(source)
    return load_eval_model(source, dtype), tokenizer, describe(source)
