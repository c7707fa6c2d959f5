"""Builders the streaming tests share: text corpora in shards of every kind, a card and a recipe over them, and the
tokens a stream trains (rows split back into their samples)."""

from __future__ import annotations

import gzip
import importlib.util
import itertools
import json
import random
from pathlib import Path

import pytest

from qwen35_tune.recipe import load_recipe

# data.near_dedupe (datasketch) and filters.language (py3langid) come with the cpt extra (also in dev); the core
# streaming path (exact dedupe, chunking, packing, resume) needs neither.
needs_cpt_extra = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("datasketch", "py3langid")),
    reason="needs the cpt extra (datasketch, py3langid): pip install -e '.[cpt]'")

WORDS = ("revenue margin liquidity covenant dividend treasury ledger audit accrual tranche coupon yield spread "
         "equity leverage hedge maturity issuer custody settlement").split()


def documents(n: int, seed: int = 0, lengths: tuple[int, ...] = (5, 40, 300)) -> list[str]:
    """``n`` distinct documents of the given word counts in turn, each starting with its own marker ``DOC<i>``."""
    rng = random.Random(seed)
    return [f"DOC{i} " + " ".join(rng.choice(WORDS) for _ in range(lengths[i % len(lengths)])) for i in range(n)]


def write_shards(folder: Path, docs: list[str], shards: int = 3, kind: str = ".jsonl.gz") -> list[Path]:
    """``docs`` round-robin into ``shards`` files of ``kind`` (.jsonl, .jsonl.gz, .txt (one per line), .parquet)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in range(shards):
        rows = docs[shard::shards]
        path = folder / f"part-{shard:03d}{kind}"
        if kind == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({"text": rows}), path, row_group_size=4)
        elif kind == ".txt":
            path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
        else:
            data = "".join(json.dumps({"text": row}) + "\n" for row in rows).encode("utf-8")
            path.write_bytes(gzip.compress(data, mtime=0) if kind.endswith(".gz") else data)
        paths.append(path)
    return paths


def write_stream_card(folder: Path, name: str, pattern: str, **extra) -> Path:
    """A streaming format: text card over ``pattern`` (relative to ``folder``)."""
    lines = [f"name: {name}", "license: mit", "format: text", "streaming: true", f"source: {{path: '{pattern}'}}"]
    lines += [f"{k}: {json.dumps(v)}" for k, v in extra.items()]
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def stream_recipe(tmp_path: Path, cards: list[tuple[Path, float]], data: str = "", train: dict | None = None,
                  overrides=()):
    """A tiny://dense recipe over ``cards`` ((card path, weight)); ``data``: extra YAML lines of the data section;
    ``train``: train keys over max_length 64, max_steps 5."""
    card_lines = "".join(f"    - {{path: '{p}', weight: {w}}}\n" for p, w in cards)
    train_keys = json.dumps({"max_length": 64, "max_steps": 5, **(train or {})})
    path = tmp_path / "recipe.yaml"
    path.write_text(f"name: t\nmodel: {{name_or_path: 'tiny://dense'}}\ntrain: {train_keys}\ndata:\n  cards:\n"
                    f"{card_lines}{data}")
    return load_recipe(path, list(overrides))


def build_stream(recipe, tokenizer, run_dir: Path | None = None):
    """The recipe's training stream (data.build_datasets), its quarantine reset as a fresh run resets it."""
    from qwen35_tune.data.build import build_datasets

    stream, _, _ = build_datasets(recipe, tokenizer, run_dir)
    stream.quarantine.restore(0)
    return stream


def take(stream, n: int) -> list[dict]:
    """The next ``n`` rows of a stream."""
    return list(itertools.islice(iter(stream), n))


def samples(rows: list[dict]) -> list[list[int]]:
    """Each row's samples (split by ``seq_lengths``; a row without it is one sample), in row order."""
    out = []
    for row in rows:
        start = 0
        for length in row.get("seq_lengths", [len(row["input_ids"])]):
            out.append(row["input_ids"][start : start + length])
            start += length
    return out


def tokenised(tokenizer, text: str) -> list[int]:
    """A document's tokens as training sees them: the text, then <|endoftext|>."""
    return tokenizer(text + "<|endoftext|>", add_special_tokens=False)["input_ids"]
