"""Row hygiene before training: exact-duplicate removal, decontamination against eval cards, media checks.

Written here because the pieces are small and must work on our canonical rows (datasets' own dedupe needs a
whole Dataset and hashes raw columns, so 'Hi ' and 'hi' would count as different conversations).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

from qwen35_tune.data.messages import text_of
from qwen35_tune.errors import UserError

_WORD = re.compile(r"\w+", re.UNICODE)


def row_text(row: dict) -> str:
    """All the words a row shows the model (every message's content and reasoning, or the plain text)."""
    if "text" in row:
        return row["text"]
    parts = []
    for m in row["messages"]:
        parts.append(text_of(m.get("content")))
        parts.append(m.get("reasoning_content") or "")
        parts.extend(json.dumps(c, sort_keys=True) for c in m.get("tool_calls") or [])
    return "\n".join(parts)


def row_hash(row: dict) -> str:
    """Hash of the row with case and whitespace normalised, so trivially re-typed copies count as duplicates."""
    if "text" in row:
        key = " ".join(row["text"].lower().split())
    else:
        key = json.dumps(
            [[m["role"], " ".join(row_text({"messages": [m]}).lower().split())] for m in row["messages"]]
        )
    if row.get("images") or row.get("videos"):  # the same question about another image is another row
        from qwen35_tune.data.media import media_key

        key += media_key(row)
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16).hexdigest()


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Lower-cased word n-grams; a text shorter than n words gives no n-gram (exact hashes catch those)."""
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


class Hygiene:
    """Decides which canonical rows are kept; remembers hashes across cards so a duplicate anywhere counts once."""

    def __init__(self, dedupe: bool = True, ngram: int = 8, max_overlap: float | None = None):
        self.dedupe, self.ngram, self.max_overlap = dedupe, ngram, max_overlap
        self._seen: set[str] = set()
        self._eval_hashes: set[str] = set()
        self._eval_ngrams: set[tuple[str, ...]] = set()
        self.eval_texts: list[str] = []  # for documents' decontamination (data.text_filters.EvalOverlap)

    def add_eval_row(self, row: dict) -> None:
        """Remember an eval row that training rows must not overlap (only with decontamination on)."""
        if self.max_overlap is not None:
            self._eval_hashes.add(row_hash(row))
            self._eval_ngrams |= ngrams(row_text(row), self.ngram)
            self.eval_texts.append(row_text(row))

    def drop_reason(self, row: dict) -> str | None:
        """'duplicate', 'contaminated' or None (keep). Call once per training row, in order."""
        digest = row_hash(row)
        if self.max_overlap is not None and self._is_contaminated(row, digest):
            return "contaminated"
        if self.dedupe:
            if digest in self._seen:
                return "duplicate"
            self._seen.add(digest)
        return None

    def _is_contaminated(self, row: dict, digest: str) -> bool:
        if digest in self._eval_hashes:
            return True
        if row.get("images") or row.get("videos"):  # shared question wording is not overlap when the media differ
            return False
        grams = ngrams(row_text(row), self.ngram)
        if not grams or not self._eval_ngrams:
            return False
        return len(grams & self._eval_ngrams) / len(grams) >= self.max_overlap


def check_media(row: dict, base: Path, roots: Sequence[str | Path] = ()) -> dict:
    """Resolve a row's image/video paths against the card's media folder (``base``); URLs, missing files and files
    outside ``base`` and the card's other media ``roots`` make the row bad."""
    from qwen35_tune.data.media_paths import resolve_row_media

    return resolve_row_media(row, base, roots)


def decontamination_targets(recipe) -> set[str]:
    """Names of the eval cards training rows are checked against (data.decontaminate.against; default all)."""
    pairs = recipe.card_pairs("eval")
    names = {card.name for _, card in pairs}
    decon = recipe.data.decontaminate
    if decon is None or decon.against is None:
        return names
    chosen = set()
    for wanted in decon.against:
        tail = Path(wanted).parts  # a path as written in the recipe (stored absolute) matches by its last parts
        match = [card.name for ref, card in pairs if wanted == card.name or Path(ref.path).parts[-len(tail):] == tail]
        if not match:
            raise UserError(f"data.decontaminate.against: '{wanted}' is not one of data.eval_cards "
                            f"({', '.join(sorted(names)) or 'none given'}); give a card name or its path")
        chosen.update(match)
    return chosen
