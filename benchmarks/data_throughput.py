"""Rows per second of render + mask + tokenize for ~20k generated CoT rows, ours vs TRL's own preprocessing.

Ours: qwen35_tune.data.cached_render (template-agnostic masks verified token by token, multi-process
datasets.map), cold (empty cache) and warm (cache keyed on rows + tokenizer + template + options).
TRL: SFTTrainer._prepare_dataset on the same rows as prompt/completion conversations (its completion-only
masking: one prompt render and one full render per row), with the same number of processes.

    python benchmarks/data_throughput.py [--rows 20000] [--num-proc 2] [--template PATH.jinja]

--template renders both sides with another chat template, e.g. Qwen's official one as TRL ships it:
    --template "$(python -c 'import trl, os; print(os.path.dirname(trl.__file__))')/chat_templates/qwen3_5_think.jinja"
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace


def cot_rows(n: int) -> list[dict]:
    rng = random.Random(0)
    rows = []
    for i in range(n):
        a, b, c = rng.randint(10, 999), rng.randint(10, 999), rng.randint(2, 9)
        q = f"Problem {i}: a shop has {a} items, sells {b // 2}, then receives {c} boxes of {b} items. How many now?"
        left, total = a - b // 2, a - b // 2 + c * b
        r = f"Start {a}. Sold {b // 2}: {a} - {b // 2} = {left}. Boxes: {c} * {b} = {c * b}. Sum: {total}."
        rows.append({"question": q, "reasoning": r, "answer": f"The shop has {total} items."})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--template", type=Path, help="chat template for both sides (default: the tiny tokenizer's)")
    args = parser.parse_args()

    import datasets
    from trl import SFTConfig, SFTTrainer

    from qwen35_tune.data.cached_render import render_rows_cached
    from qwen35_tune.data.formats import normalise_row
    from qwen35_tune.models.tiny_tokenizer import build_tiny_tokenizer

    datasets.disable_progress_bars()
    tok = build_tiny_tokenizer()
    if args.template:
        tok.chat_template = args.template.read_text()
    raw = cot_rows(args.rows)
    canonical = [normalise_row(r, "cot") for r in raw]

    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        ours = render_rows_cached(canonical, tok, cache_dir=Path(cache), num_proc=args.num_proc)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = render_rows_cached(canonical, tok, cache_dir=Path(cache), num_proc=args.num_proc)
        warm = time.perf_counter() - t0
    assert len(ours) == len(again) == args.rows and not any(ours["problem"])

    trl_rows = datasets.Dataset.from_list([
        {"prompt": m["messages"][:-1], "completion": m["messages"][-1:]} for m in canonical
    ])
    config = SFTConfig(output_dir=tempfile.mkdtemp(), dataset_num_proc=args.num_proc, report_to="none",
                        use_cpu=True, bf16=False)
    fake_trainer = SimpleNamespace(chat_template=None, completion_only_loss=True)
    t0 = time.perf_counter()
    trl_out = SFTTrainer._prepare_dataset(fake_trainer, trl_rows, tok, config, False, None, "train")
    trl_time = time.perf_counter() - t0
    assert len(trl_out) == args.rows

    # Where the cold time goes: one tokenizer pass and one template render per row over the same texts, each on its
    # own (any render+mask+tokenize path needs at least these; ours renders twice per row to derive the mask).
    from qwen35_tune.data.batch_render import CompiledChat, text_and_spans

    chat = CompiledChat(tok)
    t0 = time.perf_counter()
    texts = [text_and_spans(chat, row, {})[0] for row in canonical]
    render_time = time.perf_counter() - t0
    t0 = time.perf_counter()
    tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    encode_time = time.perf_counter() - t0

    n = args.rows
    print(f"rows: {n}, processes: {args.num_proc}")
    print(f"parts, one process: prompt+full renders {render_time:.1f} s, one Rust encode_batch pass (all cores) "
          f"{encode_time:.1f} s")
    print(f"ours, cold (render + mask + verify + tokenize): {n / cold:10.0f} rows/s  ({cold:.1f} s)")
    print(f"ours, warm (cache hit):                         {n / warm:10.0f} rows/s  ({warm:.2f} s)")
    print(f"TRL _prepare_dataset (prompt/completion):       {n / trl_time:10.0f} rows/s  ({trl_time:.1f} s)")
    print(f"ratio ours/TRL: cold {trl_time / cold:.2f}x, warm {trl_time / warm:.1f}x")
    card_cold, card_warm = whole_card_build(raw, tok)
    print(f"whole card build (read .jsonl, normalise, dedupe, 5% eval holdout, render, stats) through "
          f"build_datasets: cold {card_cold:.1f} s, warm {card_warm:.1f} s")


def whole_card_build(raw: list[dict], tokenizer) -> tuple[float, float]:
    """Seconds for ``build_datasets`` on the rows written as a data card (as many processes as ``train`` uses): cold
    (empty render cache), then warm."""
    import json
    import os

    from qwen35_tune.data.build import build_datasets
    from qwen35_tune.recipe import load_recipe

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "cot.jsonl").write_text("".join(json.dumps(row) + "\n" for row in raw))
        (root / "cot.yaml").write_text("name: cot\nlicense: mit\nformat: cot\nsource: {path: cot.jsonl}\n")
        (root / "recipe.yaml").write_text("name: bench\nmodel: {name_or_path: 'tiny://dense'}\n"
                                          "train: {max_length: 512}\n"
                                          "data:\n  cards: [{path: cot.yaml, eval_fraction: 0.05}]\n")
        recipe = load_recipe(root / "recipe.yaml", [])
        os.environ["QWEN35_TUNE_CACHE"] = str(root / "cache")  # an empty render cache
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            train, _, _ = build_datasets(recipe, tokenizer, None)
            times.append(time.perf_counter() - t0)
        assert len(train) == round(len(raw) * 0.95)
    return times[0], times[1]


if __name__ == "__main__":
    main()
