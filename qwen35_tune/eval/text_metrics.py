"""Text scores: corpus chrF / BLEU (sacrebleu) for translation, exact match and multiple choice for domain QA.

sacrebleu owns the translation metrics. Exact match and choice picking are a few lines of normalisation that
depend on how our prompts phrase answers ("B", "(B)", "The answer is B", or the choice's text), so they are ours.
"""

from __future__ import annotations

import re
import string
import unicodedata

# "B", "(B)", "B." alone, or "B) text" / "(B) text" / "B: text" (a bare "A cat" is text, not the letter A).
_LETTER = re.compile(r"^\(?([A-Za-z])\)?[.:]?$|^\(?([A-Za-z])[).:]\s")
# "The answer is B" / "answer: (b)"; a lower-case letter only in brackets ("the answer is a cat" is text).
_ANSWER_LETTER = re.compile(r"(?i:answer\s*(?:is|:)?\s*:?)\s*(?:\(([A-Za-z])\)|([A-Z])(?![A-Za-z]))")


def chrf(hypotheses: list[str], references: list[str]) -> float:
    """Corpus chrF (0-100) of ``hypotheses`` against one reference each (sacrebleu's defaults)."""
    from sacrebleu.metrics import CHRF

    _check_lengths(hypotheses, references)
    return float(CHRF().corpus_score(list(hypotheses), [list(references)]).score)


def bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (0-100) of ``hypotheses`` against one reference each (character-level when references are CJK)."""
    from sacrebleu.metrics import BLEU

    _check_lengths(hypotheses, references)
    # flores200 (SentencePiece) would need a download; '13a' splits Latin text and 'char' is fairer for CJK,
    # so pick per corpus: any CJK reference -> character-level BLEU.
    tokenize = "char" if any(_has_cjk(ref) for ref in references) else "13a"
    return float(BLEU(tokenize=tokenize).corpus_score(list(hypotheses), [list(references)]).score)


def _check_lengths(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")


def _has_cjk(text: str) -> bool:
    return any("CJK" in unicodedata.name(ch, "") or "HIRAGANA" in unicodedata.name(ch, "") for ch in text)


def normalise_text(text: str) -> str:
    """Lower case, no punctuation (ASCII or Unicode), single spaces: the form exact match compares."""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    text = "".join(" " if ch in string.punctuation or unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


def exact_match(predicted: str, gold: str) -> bool:
    """Whether ``predicted`` equals ``gold`` ignoring case, whitespace and punctuation."""
    if predicted is None or gold is None:
        return False
    return normalise_text(predicted) == normalise_text(gold)


def choice_index(answer: str, choices: list[str]) -> int | None:
    """Which choice ``answer`` names: a letter ("B", "(b)", "B) ...", "The answer is B") or a choice's text."""
    if answer is None:
        return None
    answer = str(answer).strip()
    for pattern in (_LETTER, _ANSWER_LETTER):
        match = pattern.search(answer) if pattern is _ANSWER_LETTER else pattern.match(answer)
        if match:
            index = ord((match.group(1) or match.group(2)).upper()) - ord("A")
            if 0 <= index < len(choices):
                return index
    normalised = normalise_text(answer)
    texts = [normalise_text(choice) for choice in choices]
    if normalised in texts:
        return texts.index(normalised)
    named = [i for i, text in enumerate(texts) if text and re.search(rf"\b{re.escape(text)}\b", normalised)]
    return named[0] if len(named) == 1 else None  # naming two choices is not an answer


def choice_correct(predicted: str, choices: list[str], gold: str) -> bool:
    """Whether ``predicted`` picks the same choice as ``gold`` (each a letter or a choice's text)."""
    want = choice_index(gold, choices)
    return want is not None and choice_index(predicted, choices) == want
