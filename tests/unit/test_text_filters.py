"""A text card's language and length filters and the eval-overlap check drop the documents they should, count each,
and work the same whether the card streams or is read up front."""

from __future__ import annotations

import pytest

from qwen35_tune.data.text_filters import DocumentChecks, EvalOverlap
from qwen35_tune.errors import UserError
from tests.unit.stream_kit import build_stream, needs_cpt_extra, stream_recipe, take, write_shards, write_stream_card

ENGLISH = "The board approved the quarterly dividend after the audit committee reviewed the cash flow statement."
GERMAN = "Der Vorstand hat die Quartalsdividende genehmigt, nachdem der Prüfungsausschuss den Abschluss prüfte."
FRENCH = "Le conseil a approuvé le dividende trimestriel après l'examen des comptes par le comité d'audit."
EVAL_QUESTION = "what is the coupon of a bond that pays forty dollars a year on a face value of one thousand dollars"


@needs_cpt_extra
def test_language_length_and_overlap_checks():
    checks = DocumentChecks(("en",), 0.5, min_words=5, max_words=40, overlap=EvalOverlap(8, 0.5))
    checks.overlap.add_eval_text(EVAL_QUESTION)
    assert checks.drop_reason(ENGLISH) is None
    assert checks.drop_reason(GERMAN) == "language" and checks.drop_reason(FRENCH) == "language"
    assert checks.drop_reason("Too short here.") == "length"
    assert checks.drop_reason(" ".join([ENGLISH] * 4)) == "length"
    # one eval question inside a long filing: a tiny share of the filing's n-grams, all of the question's
    filing = " ".join([ENGLISH] * 3) + " Q: " + EVAL_QUESTION + "? " + ENGLISH
    long_checks = DocumentChecks(overlap=checks.overlap)
    assert long_checks.drop_reason(filing) == "contaminated"
    assert long_checks.drop_reason(" ".join([ENGLISH] * 3)) is None


@needs_cpt_extra
def test_unknown_language_code_is_a_clear_error(tmp_path):
    from qwen35_tune.cards import load_card

    (tmp_path / "a.txt").write_text(ENGLISH)
    (tmp_path / "c.yaml").write_text("name: c\nlicense: mit\nformat: text\nlanguages: [english]\n"
                                     "source: {path: a.txt}\nfilters: {language: true}\n")
    with pytest.raises(UserError, match=r"data card 'c': filters.language cannot detect english"):
        DocumentChecks.for_card(load_card(tmp_path / "c.yaml"), None)


@needs_cpt_extra
@pytest.mark.parametrize("streaming", [True, False])
def test_filters_drop_and_count_in_both_paths(tmp_path, tiny_tokenizer, streaming):
    from qwen35_tune.data.build import build_datasets

    docs = [ENGLISH, GERMAN, "Short.", FRENCH, ENGLISH + " Also the treasury team hedged the currency exposure."]
    write_shards(tmp_path / "corpus", docs, shards=1, kind=".txt")
    card = write_stream_card(tmp_path, "corpus", "corpus/*.txt", languages=["en"],
                             filters={"language": True, "min_words": 3})
    text = card.read_text().replace("path: 'corpus/*.txt'}", "path: 'corpus/*.txt', sample_by: line}")
    card.write_text(text if streaming else text.replace("streaming: true\n", ""))
    recipe = stream_recipe(tmp_path, [(card, 1.0)], train={"max_length": 256})
    if streaming:
        stream = build_stream(recipe, tiny_tokenizer)
        rows = take(stream, 2)
        stream.commit(2)
        counts = stream.stats()["sources"][0]
        texts = [tiny_tokenizer.decode(r["input_ids"]) for r in rows]
    else:
        train, _, stats = build_datasets(recipe, tiny_tokenizer)
        counts = stats["cards"][0]
        texts = [tiny_tokenizer.decode(ids) for ids in train["input_ids"]]
    assert sorted(t.removesuffix("<|endoftext|>") for t in texts) == sorted([docs[0], docs[4]])
    assert (counts["language"], counts["length"]) == (2, 1)


def test_hygiene_extras_missing_is_a_user_error_naming_the_extra(monkeypatch):
    """near_dedupe and filters.language use the cpt extra; without it the run stops before reading, saying so."""
    import sys
    from types import SimpleNamespace

    from qwen35_tune.data.near_dedupe import NearDuplicateKeys

    monkeypatch.setitem(sys.modules, "datasketch", None)  # import datasketch -> ImportError
    with pytest.raises(UserError, match=r"data.near_dedupe needs datasketch: pip install 'qwen35-tune\[cpt\]'"):
        NearDuplicateKeys.for_threshold(0.8, 128, 5)
    monkeypatch.setattr("qwen35_tune.data.text_filters._IDENTIFIER", None)  # not loaded yet in this process
    monkeypatch.setitem(sys.modules, "py3langid", None)
    monkeypatch.setitem(sys.modules, "py3langid.langid", None)
    filters = SimpleNamespace(language=True, min_language_confidence=0.5, min_words=None, max_words=None)
    with pytest.raises(UserError, match=r"filters.language needs py3langid: pip install 'qwen35-tune\[cpt\]'"):
        DocumentChecks.for_card(SimpleNamespace(name="corpus", languages=["en"], filters=filters), None)
