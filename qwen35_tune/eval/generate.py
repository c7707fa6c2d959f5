"""Batched generation (greedy for evaluation): load a model dir / run dir / adapter dir, render prompts with the
checkpoint's own chat template in thinking or non-thinking mode, generate with a token budget, left-padded.
Also behind ``qwen35-tune chat`` and ``qwen35-tune generate`` (qwen35_tune/infer/).

Generation itself is transformers' ``generate``; what is ours is finding the right weights (a run's merged folder,
or its adapter on the base it trained from), the thinking switch, and splitting the output at ``</think>``.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.recipe.eval_section import GENERATION_MODES as MODES
from qwen35_tune.rundir import RunDir

log = logging.getLogger(__name__)

THINK_START, THINK_END = "<think>", "</think>"


@dataclass(frozen=True)
class Generation:
    """One model output: the raw text, its final answer (after ``</think>``; empty while the think block is
    unfinished, so nothing is scored from reasoning), the reasoning, and whether it hit the budget."""

    text: str
    answer: str
    new_tokens: int
    truncated: bool
    reasoning: str = ""
    unfinished_think: bool = False


def describe_source(path: Path) -> dict:
    """What ``path`` is: {'kind': 'model'|'adapter'|'run', 'weights': folder, 'base': base folder or None}."""
    path, run = Path(path), RunDir(Path(path))
    if run.is_finished():
        if (run.merged / "config.json").exists():
            return {"kind": "run", "weights": run.merged, "base": None, "run_dir": path}
        record = run.run
        base = record.base_path if record.weights == "adapter" else None
        # an adapter trained on an earlier stage's weights (model.init_from) fits those only, not model.name_or_path
        if base is not None and not Path(base).exists() and record.init_kind != "weights":
            from qwen35_tune.models.load import resolve_model_path

            base = resolve_model_path(record.base_model)
        return {"kind": "run", "weights": run.weights, "base": base, "run_dir": path}
    if (path / "adapter_config.json").exists():
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        return {"kind": "adapter", "weights": path, "base": base, "run_dir": None}
    if (path / "config.json").exists():
        return {"kind": "model", "weights": path, "base": None, "run_dir": None}
    raise UserError(f"{path}: not a run directory (run.json), model folder (config.json) or adapter folder "
                    "(adapter_config.json)")


def _source_key(source: dict) -> str:
    """The setting a missing checkpoint is reported under (exit 2 names it)."""
    return {"run": "the run's model.name_or_path", "adapter": "adapter_config.json base_model_name_or_path"}.get(
        source["kind"], "RUN_OR_MODEL_DIR")  # fmt: skip


def load_eval_model(source: dict, dtype: str = "auto"):
    """The model a ``describe_source`` description names (an adapter on its base), in eval mode."""
    from qwen35_tune.models.load import load_model
    from qwen35_tune.models.source_errors import checkpoint_source

    with checkpoint_source(str(source["base"] or source["weights"]), _source_key(source)):  # e.g. base not cached
        if source["base"] is None:
            model = load_model(str(source["weights"]), dtype)
        else:
            from peft import PeftModel

            model = PeftModel.from_pretrained(load_model(str(source["base"]), dtype), str(source["weights"]))
    model.eval()
    return model


def load_eval_tokenizer(source: dict):
    """The tokenizer (and chat template) saved with the weights, else the base's."""
    from qwen35_tune.models.load import load_tokenizer

    tokenizer_dir = source["weights"] if (Path(source["weights"]) / "tokenizer_config.json").exists() else None
    return load_tokenizer(str(tokenizer_dir or source["base"] or source["weights"]), key=_source_key(source))


def load_for_eval(path: Path, dtype: str = "auto"):
    """(model in eval mode with the KV cache on, tokenizer with its chat template, description) for ``path``."""
    source = describe_source(path)
    return load_eval_model(source, dtype), load_eval_tokenizer(source), source


def render_prompts(tokenizer, conversations: list[list[dict]], mode: str = "thinking") -> list[str]:
    """Prompt texts ending in the assistant's generation prompt; non-thinking passes ``enable_thinking=False``."""
    if mode not in MODES:
        raise UserError(f"mode '{mode}' is not one of {', '.join(MODES)}")
    kwargs = {} if mode == "thinking" else {"enable_thinking": False}
    return [tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
            for messages in conversations]


def opens_think(prompt: str) -> bool:
    """Whether ``prompt`` ends inside an open ``<think>`` block (Qwen3.5's thinking-mode generation prompt)."""
    return prompt.rfind(THINK_START) > prompt.rfind(THINK_END)


def split_reasoning(text: str, think_open: bool = False) -> tuple[str, str | None]:
    """(reasoning, final answer) of an output; the answer is None when the output ends inside a think block (the
    prompt opened it, ``think_open``, or the output did) and never closed it: cut off while still reasoning."""
    head, answer = text.rsplit(THINK_END, 1) if THINK_END in text else ("", text)
    if THINK_START in answer or (think_open and THINK_END not in text):
        return text.replace(THINK_START, "").replace(THINK_END, "").strip(), None
    return head.replace(THINK_START, "").replace(THINK_END, "").strip(), answer.strip()


@contextmanager
def generating(model):
    """Eval mode, no grad, KV cache on; the training state (mode, use_cache) comes back afterwards."""
    import torch

    config = getattr(model, "config", None)
    was_training, cache = model.training, getattr(config, "use_cache", None)
    model.eval()
    if config is not None:
        config.use_cache = True
    try:
        with torch.no_grad():
            yield
    finally:
        if config is not None:
            config.use_cache = cache
        model.train(was_training)


def stop_token_ids(tokenizer) -> tuple[list[int], int]:
    """(end-of-turn token ids, pad id): a reply ends at ``<|im_end|>`` (or ``<|endoftext|>``)."""
    eos = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>") if t in tokenizer.get_vocab()]
    eos = eos or [tokenizer.eos_token_id]
    return eos, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]


def decoding_kwargs(temperature: float | None) -> dict:
    """``generate`` arguments for a temperature: 0 greedy, > 0 sampling at it (top-p/top-k from the checkpoint's
    generation_config.json), None the checkpoint's own settings as they are."""
    if temperature is None:
        return {}
    if temperature < 0:
        raise UserError(f"temperature must be 0 (greedy) or positive, not {temperature}")
    if temperature == 0:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return {"do_sample": True, "temperature": temperature}


def generate_batch(model, tokenizer, prompts: list[str], max_new_tokens: int = 512, batch_size: int = 8,
                   temperature: float | None = 0.0) -> list[Generation]:
    """Continuations of ``prompts`` in batches (greedy unless ``temperature`` says otherwise, see
    ``decoding_kwargs``), left-padded so every prompt ends where generation starts."""
    if max_new_tokens <= 0 or batch_size <= 0:
        raise UserError("max_new_tokens and batch_size must be positive")
    eos, pad = stop_token_ids(tokenizer)
    decoding = decoding_kwargs(temperature)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    device = next(model.parameters()).device
    out: list[Generation] = []
    try:
        with generating(model):
            for start in range(0, len(prompts), batch_size):
                chunk = prompts[start : start + batch_size]
                enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                ids = model.generate(**enc, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad,
                                     use_cache=True, **decoding)
                out.extend(decode_generation(tokenizer, row[enc["input_ids"].shape[1]:].tolist(), eos, pad,
                                             max_new_tokens, opens_think(prompt))
                           for row, prompt in zip(ids, chunk, strict=True))
    finally:
        tokenizer.padding_side = side
    return out


def decode_generation(tokenizer, new_ids: list[int], eos: list[int], pad: int, budget: int,
                      think_open: bool = False) -> Generation:
    """Cut at the first end-of-turn token; keep <think> markers (skip_special_tokens would drop them)."""
    stop = next((i for i, t in enumerate(new_ids) if t in eos), None)
    kept = [t for t in (new_ids if stop is None else new_ids[:stop]) if t != pad]
    text = tokenizer.decode(kept, skip_special_tokens=False)
    reasoning, answer = split_reasoning(text, think_open)
    return Generation(text=text, answer=answer or "", new_tokens=len(kept),
                      truncated=stop is None and len(new_ids) >= budget, reasoning=reasoning,
                      unfinished_think=answer is None)


def generate_answers(model, tokenizer, conversations: list[list[dict]], mode: str = "thinking",
                     max_new_tokens: int = 512, batch_size: int = 8) -> tuple[list[str], list[Generation]]:
    """(prompts, generations) for prompt conversations (messages up to, not including, the answer)."""
    prompts = render_prompts(tokenizer, conversations, mode)
    return prompts, generate_batch(model, tokenizer, prompts, max_new_tokens, batch_size)
