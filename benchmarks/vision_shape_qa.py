"""Held-out shape-QA accuracy of the tiny vision Qwen3.5 before and after a short CPU training run on image rows.

    OMP_NUM_THREADS=1 python benchmarks/vision_shape_qa.py [--steps 500] [--lr 7e-4] [--batch 16] [--method full]

Training runs through the real path: recipes/tiny/vision_lora.yaml with overrides, run_sft (image rows rendered and
masked by the data pipeline, the vision collator). The default trains the language model and the projector in full
with the vision tower frozen: on this 1M-parameter random model LoRA (``--method lora``) and higher rates stall at
the answer priors of the mixed question kinds within a CPU budget, while each kind alone is learnt in ~100 steps.

Scoring is answer choice: for each held-out row (data_cards/data/shapes_qa_eval.jsonl, images never trained on) the
model picks the candidate answer (the 4 colours, 3 shapes, or the counts) whose tokens get the highest log-likelihood
after the prompt, rendered with the same chat template and image settings as training. Besides chance level the
script prints two controls: the majority answer per question kind (what answer priors alone give) and the trained
model on a blank white image (what it gets without looking), so "after" above both means the model reads the pixels.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import logging
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data_cards/data"
RECIPE = REPO / "recipes/tiny/vision_lora.yaml"


def _choices() -> dict[str, list[str]]:
    """Candidate answers per question kind, from the generator itself (one source of truth)."""
    spec = importlib.util.spec_from_file_location("generate_shapes_qa", DATA / "generate_shapes_qa.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CHOICES


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines()]


def score_rows(model, processor, rows: list[dict], choices: dict, blank: bool = False) -> dict[str, list[bool]]:
    """Per question kind, whether the highest-likelihood candidate was the right answer, row by row."""
    import torch
    from PIL import Image

    hits: dict[str, list[bool]] = collections.defaultdict(list)
    for row in rows:
        image = Image.new("RGB", (64, 64), "white") if blank else \
            Image.open(DATA / "shapes_qa" / row["images"][0]).convert("RGB")
        question = row["messages"][0]["content"].replace("<image>", "")  # as training renders it (the "\n" stays)
        user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
        candidates = choices[row["kind"]]
        texts = [processor.apply_chat_template([user, {"role": "assistant", "content": c}], tokenize=False)
                 for c in candidates]
        prefix = texts[0][: texts[0].rindex(candidates[0] + "<|im_end|>")]
        n_prefix = len(processor(text=[prefix], images=[image])["input_ids"][0])
        processor.tokenizer.padding_side = "right"
        batch = processor(text=texts, images=[image] * len(texts), padding=True, return_tensors="pt",
                          return_mm_token_type_ids=True)
        with torch.no_grad():
            logprobs = model(**batch).logits.float().log_softmax(-1)
        scores = []
        for i in range(len(texts)):
            ids = batch["input_ids"][i]
            end = int(batch["attention_mask"][i].sum())
            targets = ids[n_prefix:end]  # the candidate and <|im_end|>
            scores.append(logprobs[i, n_prefix - 1 : end - 1].gather(-1, targets[:, None]).sum().item())
        best = candidates[max(range(len(scores)), key=scores.__getitem__)]
        hits[row["kind"]].append(best == row["messages"][1]["content"])
    return hits


def _accuracy(hits: dict[str, list[bool]]) -> float:
    flat = [h for v in hits.values() for h in v]
    return sum(flat) / len(flat)


def _per_kind(hits: dict[str, list[bool]]) -> str:
    return ", ".join(f"{k} {sum(v) / len(v):.2f} (n={len(v)})" for k, v in sorted(hits.items()))


def majority_baseline(train: list[dict], test: list[dict]) -> float:
    """Accuracy of always answering the most frequent training answer of the question's kind."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in train:
        counts[row["kind"]][row["messages"][1]["content"]] += 1
    right = [counts[r["kind"]].most_common(1)[0][0] == r["messages"][1]["content"] for r in test]
    return sum(right) / len(right)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--lr", type=float, default=7e-4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--method", choices=["lora", "full"], default="full")
    parser.add_argument("--targets", nargs="+", default=["all", "projector"], help="LoRA target presets")
    parser.add_argument("--freeze", nargs="*", default=["vision"], help="full: method.freeze (default: the tower)")
    parser.add_argument("--projector-lr", type=float, default=None, help="train.learning_rates.projector")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from qwen35_tune.models.processor import load_processor
    from qwen35_tune.recipe import load_recipe
    from qwen35_tune.train.sft import run_sft

    torch.manual_seed(0)
    choices, train_rows, test_rows = _choices(), _rows("shapes_qa.jsonl"), _rows("shapes_qa_eval.jsonl")
    overrides = [f"train.max_steps={args.steps}", f"train.learning_rate={args.lr}",
                 f"train.per_device_train_batch_size={args.batch}", "export.merge=false", "train.logging_steps=10",
                 f"method.kind={args.method}"]
    if args.method == "lora":
        overrides.append(f"method.lora.target_modules=[{', '.join(args.targets)}]")
    else:
        overrides.append(f"method.freeze=[{', '.join(args.freeze)}]")
    if args.projector_lr:
        overrides.append(f"train.learning_rates.projector={args.projector_lr}")
    recipe = load_recipe(RECIPE, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        started = time.time()
        summary = run_sft(recipe, run_dir)
        train_wall = time.time() - started
        if summary.get("preempted"):
            raise SystemExit(f"training was interrupted ({summary['preempted']}); run the benchmark again")
        base_path = json.loads((run_dir / "run.json").read_text())["base_path"]
        processor = load_processor(base_path, recipe.model.vision)
        base = AutoModelForImageTextToText.from_pretrained(base_path, dtype=torch.float32).eval()
        before = score_rows(base, processor, test_rows, choices)
        if args.method == "lora":
            trained = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
        else:
            trained = AutoModelForImageTextToText.from_pretrained(run_dir / "model", dtype=torch.float32).eval()
        after = score_rows(trained, processor, test_rows, choices)
        blank = score_rows(trained, processor, test_rows, choices, blank=True)
    chance = sum(1 / len(choices[r["kind"]]) for r in test_rows) / len(test_rows)
    trains = f"LoRA on {args.targets}" if args.method == "lora" else f"full fine-tune, frozen {args.freeze}"
    print(f"shape-QA held-out rows: {len(test_rows)} (train rows: {len(train_rows)}); {trains}, "
          f"lr {args.lr:g}, batch {args.batch}")
    print(f"training: {summary['steps']} steps, loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f}, "
          f"wall {train_wall:.1f} s (CPU, {torch.get_num_threads()} threads)")
    print(f"chance level:                {chance:.3f}")
    print(f"majority answer per kind:    {majority_baseline(train_rows, test_rows):.3f}")
    print(f"before training:             {_accuracy(before):.3f}   [{_per_kind(before)}]")
    print(f"after training:              {_accuracy(after):.3f}   [{_per_kind(after)}]")
    print(f"after, blank image control:  {_accuracy(blank):.3f}   [{_per_kind(blank)}]")


if __name__ == "__main__":
    main()
