"""Peak memory and throughput of a streaming card's data path over generated corpora larger than it could hold, next
to the tiny model's training throughput.

    python benchmarks/streaming_corpus.py [--sizes-gb 1 2] [--folder /tmp] [--no-near-dedupe] [--keep]

For each size, writes a corpus of that many bytes of JSON Lines text (16 shards of finance-like documents, 300 words
to 20,000, every one distinct) under ``--folder``, then in a fresh process builds the recipe's stream
(recipes/tiny/cpt.yaml's settings: packing to 512, exact and MinHash near-dedupe, the card's language and length
filters) and reads one whole pass of it, committing each row as training does. Reported per
size: the process's resident high-water mark (VmHWM) above the same process after building the stream and reading
one row (imports, tokenizer, filters: the baseline), documents and tokens read, and the data path's tokens/s (per
second of wall time, and per CPU-second, which other processes on a shared machine do not distort). Then the
training loop's tokens/s on the tiny model (recipes/tiny/cpt.yaml, a few steps). The corpora are deleted afterwards
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import json, re, sys, time
sys.path.insert(0, {repo!r})
from qwen35_tune.recipe import load_recipe
from qwen35_tune.data.build import build_datasets
from qwen35_tune.models.tiny_tokenizer import build_tiny_tokenizer

def peak():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024

recipe = load_recipe({recipe!r}, {overrides!r})
stream, _, _ = build_datasets(recipe, build_tiny_tokenizer())
stream.quarantine.restore(0)
source = stream.sources[0]
rows = iter(stream)
stream.commit(next(rows)["stream_step"])
baseline = peak()
started, cpu, tokens = time.perf_counter(), time.process_time(), 0
if {whole_pass!r}:
    for row in rows:
        tokens += len(row["input_ids"])
        stream.commit(row["stream_step"])
        if source.epoch > 0:
            break
seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
print(json.dumps({{"baseline": baseline, "peak": peak(), "tokens": tokens, "seconds": seconds,
                   "cpu_seconds": cpu_seconds,
                   "documents": source.counts["documents"], "rows_read": source.seen_rows,
                   "duplicates": source.counts["duplicate"],
                   "filter_bytes": source.bloom.nbytes if source.bloom else 0}}))
"""

def corpus_words() -> list[str]:
    """Whole words the tiny tokenizer keeps as one token each (its vocabulary is small, so made-up or rare words would
    cost several tokens apiece and the figures would measure the tokenizer's splitting more than the data path)."""
    from qwen35_tune.models.tiny_tokenizer import build_tiny_tokenizer

    vocab = build_tiny_tokenizer().get_vocab()
    return sorted(t[1:] for t in vocab if t.startswith("\u0120") and t[1:].isalpha() and t[1:].islower()
                  and len(t) >= 5)


def write_corpus(folder: Path, size: int, shards: int = 16, seed: int = 0) -> int:
    """``size`` bytes of JSON Lines documents in ``shards`` files; returns the number of documents."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    words = corpus_words()
    sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(8, 30))).capitalize() + "."
                 for _ in range(4000)]  # fmt: skip
    handles = [(folder / f"part-{i:04d}.jsonl").open("w", encoding="utf-8") for i in range(shards)]
    written = count = 0
    while written < size:
        words = rng.choice([300, 1000, 3000, 20000])
        body = " ".join(rng.choice(sentences) for _ in range(words // 18))
        line = json.dumps({"text": f"Report {count} of issuer {rng.randrange(10**9)}. {body}"}) + "\n"
        handles[count % shards].write(line)
        written += len(line)
        count += 1
    for handle in handles:
        handle.close()
    return count


def _card(folder: Path) -> Path:
    card = folder / "corpus.yaml"
    card.write_text(f"name: corpus\nlicense: mit\nformat: text\nstreaming: true\nlanguages: [en]\n"
                    f"source: {{path: '{folder}/*.jsonl'}}\nfilters: {{language: true, min_words: 20}}\n")
    return card


def measure(folder: Path, near_dedupe: bool, whole_pass: bool = True) -> dict:
    """Build the stream over the corpus in ``folder`` and read one pass in a fresh process."""
    recipe = folder / "recipe.yaml"
    data = "  near_dedupe: {threshold: 0.8}\n" if near_dedupe else "  near_dedupe: null\n"
    recipe.write_text(f"extends: {REPO / 'recipes/tiny/cpt.yaml'}\nname: bench\ndata:\n  cards:\n"
                      f"    - path: {_card(folder)}\n{data}  dedupe_capacity: 2000000\n")
    code = CHILD.format(repo=str(REPO), recipe=str(recipe), overrides=[], whole_pass=whole_pass)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            env={**__import__("os").environ, "TOKENIZERS_PARALLELISM": "false"})
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def training_tokens_per_second(steps: int = 6) -> dict:
    """The tiny model's training throughput on recipes/tiny/cpt.yaml (packed rows of 512 tokens)."""
    from qwen35_tune.recipe import load_recipe
    from qwen35_tune.train.sft import run_sft

    with tempfile.TemporaryDirectory() as run_dir:
        recipe = load_recipe(REPO / "recipes/tiny/cpt.yaml", [f"train.max_steps={steps}", "train.eval_strategy=no"])
        started = time.perf_counter()
        run_sft(recipe, Path(run_dir))
        rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
        runtime = next(r["train_runtime"] for r in rows if "train_runtime" in r)
        tokens = max(r.get("num_tokens", 0) for r in rows)
    return {"tokens": tokens, "train_seconds": runtime, "tokens_per_second": tokens / runtime,
            "wall_seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-gb", type=float, nargs="*", default=[1.0, 2.0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp"))
    parser.add_argument("--no-near-dedupe", action="store_true", help="skip MinHash (on by default, as in the "
                        "shipped cpt recipes)")
    parser.add_argument("--keep", action="store_true", help="keep the generated corpora")
    parser.add_argument("--train-steps", type=int, default=6, help="0: no training measurement")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="qwen35_streaming_bench-", dir=args.folder))  # its own: runs may overlap
    report: dict = {"sizes": {}}
    try:
        for size in args.sizes_gb:
            folder = root / f"{size:g}gb"
            started = time.perf_counter()
            documents = write_corpus(folder, int(size * 2**30))
            generated = time.perf_counter() - started
            result = measure(folder, not args.no_near_dedupe)
            result.update(gb=size, documents_written=documents, generate_seconds=round(generated, 1),
                          above_baseline_mib=round((result["peak"] - result["baseline"]) / 2**20, 1),
                          tokens_per_second=round(result["tokens"] / result["seconds"]),
                          tokens_per_cpu_second=round(result["tokens"] / result["cpu_seconds"]))
            report["sizes"][f"{size:g}"] = result
            print(json.dumps(result), flush=True)
            if not args.keep:
                shutil.rmtree(folder)
        if args.train_steps:
            report["training"] = training_tokens_per_second(args.train_steps)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    sizes = list(report["sizes"].values())
    print("\nsize   documents   tokens         data tokens/s  (per CPU-s)   peak above baseline   baseline RSS")
    for r in sizes:
        print(f"{r['gb']:g} GB  {r['documents']:>10,}  {r['tokens']:>13,}  {r['tokens_per_second']:>14,}  "
              f"{r['tokens_per_cpu_second']:>11,}  {r['above_baseline_mib']:>15,.1f} MiB  "
              f"{r['baseline'] / 2**20:>10,.0f} MiB")
    if len(sizes) >= 2:
        low, high = sizes[0]["peak"], sizes[-1]["peak"]
        print(f"peak RSS {sizes[-1]['gb']:g} GB vs {sizes[0]['gb']:g} GB: {100 * (high - low) / low:+.1f}%")
    train = report.get("training")
    if train:
        ratio = f"; data path {min(r['tokens_per_second'] for r in sizes) / train['tokens_per_second']:,.0f}x that" \
            if sizes else ""  # fmt: skip
        print(f"training loop (tiny model, recipes/tiny/cpt.yaml): {train['tokens_per_second']:,.0f} tokens/s{ratio}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
