"""Per-document checks for plain-text corpora that need no memory of other documents: language, length, and overlap
with the eval cards. Each returns the reason a document is dropped (counted in data_stats.json), or None.

Language is py3langid's (langid.py's model, shipped inside the package: runs offline, ~0.5 ms a document).
Decontamination of a long document cannot use the chat rows' rule (the share of the row's n-grams found in eval
rows): one eval question copied into a 20-page filing is a tiny share of the filing. A document is contaminated when
that share reaches ``max_overlap``, or when it holds at least ``max_overlap`` of the n-grams of any single eval row.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

_WORD = re.compile(r"\w+", re.UNICODE)
LANGUAGE_SAMPLE_CHARS = 2000


def word_count(text: str) -> int:
    return sum(1 for _ in _WORD.finditer(text))


def _ngram_hashes(words: list[str], n: int) -> set[int]:
    import xxhash

    return {xxhash.xxh3_64_intdigest(" ".join(words[i : i + n]).encode("utf-8")) for i in range(len(words) - n + 1)}


@dataclass
class EvalOverlap:
    """The eval rows' word n-grams, to find documents that contain them (``data.decontaminate``)."""

    ngram: int
    max_overlap: float
    rows_of: dict[int, list[int]] = field(default_factory=dict)  # n-gram hash -> eval rows holding it
    sizes: list[int] = field(default_factory=list)  # distinct n-grams per eval row

    def add_eval_text(self, text: str) -> None:
        grams = _ngram_hashes(_WORD.findall(text.lower()), self.ngram)
        row = len(self.sizes)
        self.sizes.append(len(grams))
        for gram in grams:
            self.rows_of.setdefault(gram, []).append(row)

    def contaminated(self, text: str) -> bool:
        if not self.rows_of:
            return False
        grams = _ngram_hashes(_WORD.findall(text.lower()), self.ngram)
        hits = [g for g in grams if g in self.rows_of]
        if not hits:
            return False
        if len(hits) / len(grams) >= self.max_overlap:
            return True
        per_row = Counter(row for g in hits for row in self.rows_of[g])
        return any(count / self.sizes[row] >= self.max_overlap for row, count in per_row.items())


@dataclass
class DocumentChecks:
    """A text card's filters (``card.filters``) and the recipe's eval overlap, applied one document at a time."""

    languages: tuple[str, ...] = ()  # empty: no language filter
    min_confidence: float = 0.5
    min_words: int | None = None
    max_words: int | None = None
    overlap: EvalOverlap | None = None

    @classmethod
    def for_card(cls, card, overlap: EvalOverlap | None) -> DocumentChecks:
        filters = card.filters
        if filters is None:
            return cls(overlap=overlap)
        languages = tuple(dict.fromkeys(code.split("-")[0].lower() for code in card.languages)) if filters.language \
            else ()  # fmt: skip
        if languages:
            _check_languages(languages, card.name)
        return cls(languages, filters.min_language_confidence, filters.min_words, filters.max_words, overlap)

    def drop_reason(self, text: str) -> str | None:
        """'length', 'language' or 'contaminated' for a document to drop, else None."""
        if self.min_words is not None or self.max_words is not None:
            words = word_count(text)
            if (self.min_words is not None and words < self.min_words) or (
                    self.max_words is not None and words > self.max_words):
                return "length"
        if self.languages:
            language, confidence = _identifier().classify(text[:LANGUAGE_SAMPLE_CHARS])
            if language not in self.languages or confidence < self.min_confidence:
                return "language"
        if self.overlap is not None and self.overlap.contaminated(text):
            return "contaminated"
        return None


_IDENTIFIER = None


def _identifier():
    """py3langid's identifier with normalised probabilities, loaded once per process (~1.5 s)."""
    global _IDENTIFIER
    if _IDENTIFIER is None:
        try:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier
        except ImportError:
            from qwen35_tune.errors import UserError

            raise UserError("filters.language needs py3langid: pip install 'qwen35-tune[cpt]'") from None
        _IDENTIFIER = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _IDENTIFIER


def _check_languages(languages: tuple[str, ...], card_name: str) -> None:
    from qwen35_tune.errors import UserError

    known = set(_identifier().labels)
    unknown = [code for code in languages if code not in known]
    if unknown:
        raise UserError(f"data card '{card_name}': filters.language cannot detect {', '.join(unknown)} (py3langid "
                        f"knows {len(known)} ISO 639-1 codes, e.g. en, de, fr, zh); fix the card's `languages`")


class TextRowChecks:
    """The document hygiene of a format: text card read up front (not streaming): near-duplicates over an exact set of
    MinHash band keys (the card is in memory anyway, so no Bloom filter), then the card's filters and eval overlap."""

    def __init__(self, checks: DocumentChecks, near=None, seen: set[int] | None = None):
        self.checks, self.near = checks, near
        self.seen = seen if seen is not None else set()

    def drop_reason(self, text: str) -> str | None:
        """'near_duplicate', 'length', 'language' or 'contaminated' for a document to drop, else None."""
        if self.near is not None:
            keys = self.near.keys(text).tolist()
            if any(key in self.seen for key in keys):
                return "near_duplicate"
            self.seen.update(keys)
        return self.checks.drop_reason(text)
