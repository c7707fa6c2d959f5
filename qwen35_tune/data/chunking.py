"""Documents longer than ``train.max_length`` become consecutive chunks: every token once, in order, none cut off.

Continued pretraining trains every token of a document (plus the end-of-document token that separates it from the
next, as Qwen's pretraining data does). A document over ``max_length`` is not truncated (chat rows' ``too_long``)
but split at every ``max_length`` tokens; each chunk is a sequence of its own (packed next to others with its
boundaries, so no chunk sees another's Gated DeltaNet state), so the concatenation of a document's chunks is exactly
its tokens.
"""

from __future__ import annotations

from qwen35_tune.data.render import RenderedRow

END_OF_DOCUMENT = "<|endoftext|>"  # Qwen's document separator in pretraining (its pad token too, never <|im_end|>)


def chunk_bounds(length: int, max_length: int) -> list[tuple[int, int]]:
    """(start, end) of each chunk of a ``length``-token document: consecutive, ``max_length`` long (the last less)."""
    return [(start, min(start + max_length, length)) for start in range(0, length, max_length)] or [(0, 0)]


def chunk_row(row: RenderedRow, max_length: int) -> list[RenderedRow]:
    """A plain-text row as rows of at most ``max_length`` tokens (itself when it fits); labels follow the ids."""
    if len(row.input_ids) <= max_length:
        return [row]
    return [RenderedRow("", row.input_ids[a:b], row.labels[a:b], ()) for a, b in chunk_bounds(len(row.input_ids),
                                                                                              max_length)]


def end_of_document_id(tokenizer) -> int:
    """The id of ``<|endoftext|>``; a UserError for a tokenizer without it (not a Qwen tokenizer)."""
    from qwen35_tune.errors import UserError

    token_id = tokenizer.convert_tokens_to_ids(END_OF_DOCUMENT)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise UserError(f"format: text appends {END_OF_DOCUMENT} after each document (Qwen's separator), but this "
                        "tokenizer has no such token")
    return token_id
