"""The training set of a recipe with streaming cards: their documents read while training, next to the other cards'
rendered rows replayed in the same mixture (``data.streaming``).

``build_datasets`` renders every card that does not stream (eval cards, holdouts and chat cards, exactly as
without streaming) and hands the training parts here, in the recipe's card order.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from qwen35_tune.data.bloom import PendingBloom, bloom_size
from qwen35_tune.data.chunking import END_OF_DOCUMENT, end_of_document_id
from qwen35_tune.data.near_dedupe import NearDuplicateKeys
from qwen35_tune.data.render_media import MultimodalRow
from qwen35_tune.data.sources import source_files
from qwen35_tune.data.stream_docs import CardStream
from qwen35_tune.data.stream_sources import ReplaySource, TextSource
from qwen35_tune.data.streaming import StreamingTrainData, StreamQuarantine
from qwen35_tune.data.text_filters import DocumentChecks, EvalOverlap
from qwen35_tune.data.text_readers import check_parquet_columns
from qwen35_tune.errors import UserError

log = logging.getLogger(__name__)
FILTER_FALSE_POSITIVE = 1e-5  # per key; a document is wrongly called a duplicate at about (1 + bands) x this rate


def rank_and_world() -> tuple[int, int]:
    """This process's data-parallel rank and the process count, from the launcher (known before any trainer)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1") or 1)


def text_encoder(tokenizer):
    """text -> ids of ``text + <|endoftext|>``, tokenised as the cached path tokenises a plain-text row."""
    end_of_document_id(tokenizer)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return lambda text: backend.encode(text + END_OF_DOCUMENT, add_special_tokens=False).ids
    return lambda text: tokenizer(text + END_OF_DOCUMENT, add_special_tokens=False)["input_ids"]


def eval_overlap(recipe, eval_texts: list[str]) -> EvalOverlap | None:
    """The eval rows' n-grams for document decontamination (None when data.decontaminate is off)."""
    decon = recipe.data.decontaminate
    if decon is None:
        return None
    overlap = EvalOverlap(decon.ngram, decon.max_overlap)
    for text in eval_texts:
        overlap.add_eval_text(text)
    return overlap


def card_stream(recipe, card, overlap: EvalOverlap | None, rank: int, world: int) -> CardStream:
    """The plain-data description of a streaming card's documents (files checked now, before training starts)."""
    files = source_files(card.source_paths)
    if not files:
        raise UserError(f"data card '{card.name}': source.path matches no file now "
                        f"({', '.join(card.source_paths)})")
    text_key = card.columns.get("text", "text")
    check_parquet_columns(files, text_key)
    near = recipe.data.near_dedupe
    keys = NearDuplicateKeys.for_threshold(near.threshold, near.num_perm, near.shingle_words) if near else None
    return CardStream(card.name, tuple(str(f) for f in files), recipe.seed, text_key, card.source.sample_by,
                      dict(card.columns), rank, world, recipe.data.dedupe, keys,
                      DocumentChecks.for_card(card, overlap))  # fmt: skip


def dedupe_filter(recipe, spec: CardStream) -> PendingBloom | None:
    """The card's fixed-size dedupe filter (``data.dedupe_capacity`` documents per pass), or None without dedupe."""
    keys = int(spec.dedupe) + (spec.near.bands if spec.near is not None else 0)
    if not keys:
        return None
    bits, hashes = bloom_size(recipe.data.dedupe_capacity, keys, FILTER_FALSE_POSITIVE)
    bloom = PendingBloom(bits, hashes)
    log.info("data card '%s': dedupe filter of %.1f MiB for %d documents per pass (%d keys each)", spec.name,
             bloom.nbytes / 2**20, recipe.data.dedupe_capacity, keys)
    return bloom


def build_stream(recipe, tokenizer, run_dir: Path | None, parts: list[tuple], eval_texts: list[str]):
    """StreamingTrainData over ``parts``: (card ref, card, rendered rows or None for a streaming card) in order."""
    rank, world = rank_and_world()
    writes = run_dir is not None and rank == 0
    quarantine = StreamQuarantine(run_dir / "quarantine.stream.jsonl" if writes else None)
    overlap = eval_overlap(recipe, eval_texts)
    encode = text_encoder(tokenizer)
    train = recipe.train
    sources, weights = [], []
    for ref, card, rows in parts:
        if rows is None:
            spec = card_stream(recipe, card, overlap, rank, world)
            sources.append(TextSource(spec, encode, train.max_length, card.max_bad_fraction,
                                      dedupe_filter(recipe, spec), quarantine, train.dataloader_num_workers))
        elif rows:
            if any(isinstance(row, MultimodalRow) for row in rows):
                raise UserError(f"data card '{card.name}': rows with images or videos cannot be mixed with a "
                                "streaming card (its rows carry token ids only); train them in a run of their own")
            sources.append(ReplaySource(card.name, [(r.input_ids, r.labels) for r in rows], recipe.seed, rank, world))
        else:
            log.warning("data card '%s': no training rows left to mix in", card.name)
            continue
        weights.append(ref.weight)
    packing_length = (train.packing_length or train.max_length) if train.packing else None
    return StreamingTrainData(sources, weights, packing_length, quarantine)
