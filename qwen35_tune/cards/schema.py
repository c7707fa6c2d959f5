"""Data card schema: one YAML file per dataset saying where its rows are, their format, and their license."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, PrivateAttr, Tag, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from qwen35_tune.cards.globs import expand_pattern, expand_patterns
from qwen35_tune.yaml_lines import CHECK_ERROR, StrictModel

SOURCE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".jsonl.gz", ".txt", ".txt.gz")
TEXT_ONLY_SUFFIXES = (".txt", ".txt.gz")  # plain text: only format: text reads it
# Canonical fields each format reads (keys of a card's `columns` mapping).
FORMAT_FIELDS = {
    "messages": ("messages",), "sharegpt": ("conversations",), "alpaca": ("instruction", "input", "output"),
    "prompt_completion": ("prompt", "completion"), "cot": ("question", "reasoning", "answer", "system"),
    "text": ("text",),
    "preference": ("prompt", "chosen", "rejected", "system"),
    "verifiable": ("prompt", "answer", "tests", "choices", "label", "reference", "system"),  # stage: grpo
}  # fmt: skip
# audios: known so a card may map it, then refused for Qwen3.5 (no audio tower; recipe/vision_checks.py)
COMMON_FIELDS = ("tools", "enable_thinking", "images", "videos", "audios")
HUB_ONLY = {"hub", "revision", "config", "split", "data_files", "streaming"}


def _problem_at(key: str, message: str) -> PydanticCustomError:
    """A cross-field error reported at ``key`` of the card (as the recipe schema's ``problem_at``)."""
    return PydanticCustomError(CHECK_ERROR, "{message}", {"message": message, "at": key})


def _base_dir(info: ValidationInfo) -> Path:
    """Folder that relative paths are relative to: the card file's, given by the loader; else the working dir."""
    return Path((info.context or {}).get("base_dir") or Path.cwd())


def too_broad(folder: str | Path) -> bool:
    """True for a media folder that would let rows reach any of the user's files: the file system root, or a folder
    holding the home folder (``/home``, ``~`` itself)."""
    real = os.path.realpath(folder)
    home = os.path.realpath(Path("~").expanduser())
    return real == os.path.dirname(real) or os.path.commonpath([home, real]) == real


def _media_folder(value: str, info: ValidationInfo) -> str:
    """A media folder given in a card: made absolute against the card's folder; it must exist and must not be the file
    system root or a folder holding the home folder (rows could then name any of the user's files)."""
    full = os.path.normpath(_base_dir(info) / Path(value).expanduser())
    if not os.path.isdir(full):
        raise ValueError(f"folder not found (looked for {full})")
    if too_broad(full):
        raise ValueError(f"{full} is the file system root or holds your home folder: rows could then name any of "
                         "your files; give the folder that holds the card's media")
    return full


class LocalSource(StrictModel):
    """Rows in local files."""

    path: list[str] = Field(
        description="File or glob (or a list of them) relative to the card file; .jsonl, .json, .parquet or .csv "
        "(format: text also reads .txt; .jsonl.gz and .txt.gz are read decompressed). "
        "Each must match at least one existing file; stored as absolute paths."
    )
    sample_by: Literal["document", "paragraph", "line"] = Field(
        "document", description=".txt files: one document per file, per blank-line-separated paragraph, or per "
        "non-blank line (the name and choices of datasets' text loader)."
    )

    @field_validator("path", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        """Accept `path: x.jsonl` as well as a list, so a single file needs no brackets."""
        return [value] if isinstance(value, str) else value

    @field_validator("path")
    @classmethod
    def _existing_files(cls, patterns: list[str], info: ValidationInfo) -> list[str]:
        """Resolve against the card's folder and check now, so a typo fails at validate time, not mid-run."""
        if not patterns:
            raise ValueError("give at least one file")
        resolved = []
        for pattern in patterns:
            full = os.path.normpath(_base_dir(info) / Path(pattern).expanduser())
            matches = expand_pattern(full)
            if not matches:
                raise ValueError(f"no file matches (looked for {full})")
            bad = [m for m in matches if not m.endswith(SOURCE_SUFFIXES)]
            if bad:
                raise ValueError(f"'{Path(bad[0]).name}' is not one of {', '.join(SOURCE_SUFFIXES)}")
            resolved.append(full)
        return resolved


class HubSource(StrictModel):
    """Rows in a dataset on the Hugging Face Hub (arguments of `datasets.load_dataset`)."""

    hub: str = Field(min_length=1, description="Hub dataset id, e.g. 'HuggingFaceH4/ultrachat_200k'.")
    revision: str | None = Field(None, description="Branch, tag or commit to pin; None = the default branch.")
    config: str | None = Field(None, description="Dataset configuration (subset) name, if it has several.")
    split: str = Field("train", description="Split to read, e.g. 'train' or 'train_sft'.")
    data_files: str | list[str] | dict[str, str | list[str]] | None = Field(
        None, description="Files inside the Hub repo to read (load_dataset's data_files)."
    )
    streaming: bool = Field(False, description="Stream rows instead of downloading the whole dataset first.")


def _source_kind(value: Any) -> str | None:
    """Which source a mapping describes; None (an error) for both or neither kind of mapping."""
    if isinstance(value, (LocalSource, HubSource)):
        return "local" if isinstance(value, LocalSource) else "hub"
    if not isinstance(value, dict) or ("path" in value and "hub" in value):
        return None
    # Without either key, guess from the other keys so a typo ('pth') is reported as an unknown key with a hint.
    return "hub" if "hub" in value or (HUB_ONLY & set(value)) else "local"


Source = Annotated[
    Annotated[LocalSource, Tag("local")] | Annotated[HubSource, Tag("hub")],
    Discriminator(
        _source_kind,
        custom_error_type="source_kind",
        custom_error_message="must be a mapping with either 'path' (local files) or 'hub' (a Hub dataset id)",
    ),
]


class TextFilters(StrictModel):
    """Which documents of a format: text card are trained: language and length filters, each drop counted."""

    language: bool = Field(
        False, description="Keep only documents detected (py3langid, on their first 2,000 characters) as one of the "
        "card's `languages`, with at least min_language_confidence."
    )
    min_language_confidence: float = Field(
        0.5, ge=0, le=1, description="Least probability of the detected language for a document to count as it."
    )
    min_words: int | None = Field(
        None, gt=0, le=10**9, description="Drop documents with fewer words than this; None = no lower bound."
    )
    max_words: int | None = Field(
        None, gt=0, le=10**9, description="Drop documents with more words than this; None = no upper bound (long "
        "documents are split into train.max_length chunks, never cut)."
    )

    @model_validator(mode="after")
    def _ordered_bounds(self) -> TextFilters:
        if self.min_words is not None and self.max_words is not None and self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) is above max_words ({self.max_words})")
        return self


class DataCard(StrictModel):
    """One dataset: its rows' source and format, plus the facts a model card needs (license, domain, languages)."""

    name: str = Field(min_length=1, description="Short name, used in logs, stats and the quarantine file.")
    description: str = Field("", description="What the data is and why it is used.")
    license: str = Field(description="License id, SPDX-like (e.g. 'cc-by-4.0', 'apache-2.0', 'mit', or 'other').")
    domain: str | None = Field(None, description="Domain the data covers, e.g. 'legal' or 'medicine'.")
    languages: list[str] = Field([], description="Language codes of the text, e.g. ['en', 'de'].")
    citation: str | None = Field(None, description="How to cite the dataset (e.g. BibTeX).")
    url: str | None = Field(None, description="Where the dataset is described or can be obtained.")
    source: Source = Field(description="Where the rows are: {path: files or globs} or {hub: dataset id, ...}.")
    format: Literal["messages", "sharegpt", "alpaca", "prompt_completion", "cot", "text", "preference",
                    "verifiable"] = Field(
        "messages",
        description="Row layout: 'messages' (role/content list, tool_calls, a 'tools' column), 'sharegpt' "
        "(from/value), 'alpaca' (instruction/input/output), 'prompt_completion', 'cot' (question/reasoning/answer), "
        "'text' (plain text for continued pretraining), 'preference' (prompt + chosen + rejected answers, for "
        "stage: dpo; each a message list or plain text, or chosen/rejected as whole conversations sharing the "
        "prompt), or 'verifiable' (stage: grpo: a prompt, as text or messages, and what checks an answer: 'answer' "
        "(math), 'tests' (code), 'choices' + 'label', or 'reference').",
    )
    columns: dict[str, str] = Field(
        {}, description="Canonical field name -> this dataset's column name, for files whose columns differ."
    )
    media_dir: str | None = Field(
        None, description="Folder that relative 'images'/'videos' paths are relative to; None = the card's folder. "
        "Rows may only name media inside it (or inside media_roots). Stored absolute."
    )
    media_roots: list[str] = Field(
        [], description="More folders (relative to the card) that rows' images/videos may come from; a media path "
        "outside media_dir and these, symlinks and '..' followed, sends its row to quarantine. Stored absolute."
    )
    max_bad_fraction: float = Field(
        0.05, ge=0, le=1, description="Stop the run if more than this fraction of rows is malformed (0..1)."
    )
    streaming: bool = Field(
        False, description="format: text corpora larger than memory: read, filter, tokenise and pack the files on "
        "the fly (bounded memory, resumable, each data-parallel rank its own documents) instead of rendering the "
        "whole card before training. Needs a local source and train.max_steps; its weight is a token share."
    )
    filters: TextFilters | None = Field(
        None, description="format: text only: language and length filters for the documents; None = keep all."
    )

    _card_file: Path | None = PrivateAttr(None)

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, columns: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        """A mapping for a field the format never reads would silently do nothing."""
        fmt = info.data.get("format", "messages")
        known = FORMAT_FIELDS.get(fmt, ()) + COMMON_FIELDS
        for key in columns:
            if key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                extra = f" (did you mean '{hint[0]}'?)" if hint else f"; format '{fmt}' reads: {', '.join(known)}"
                raise ValueError(f"'{key}' is not a field of format '{fmt}'{extra}")
        return columns

    @model_validator(mode="after")
    def _text_corpus_options(self) -> DataCard:
        """Plain-text files, streaming and document filters are for format: text (they read one text column)."""
        txt = [p for p in self.source_paths if p.endswith(TEXT_ONLY_SUFFIXES)
               or any(m.endswith(TEXT_ONLY_SUFFIXES) for m in expand_pattern(p))]  # fmt: skip
        if txt and self.format != "text":
            raise _problem_at("source.path", f"'{Path(txt[0]).name}' is plain text, which only format: text reads")
        if self.streaming and self.format != "text":
            raise _problem_at("streaming", "reads plain-text corpora (format: text); chat cards are rendered before "
                              "training and can be mixed in next to a streaming card")
        if self.streaming and not self.source_paths:
            raise _problem_at("streaming", "reads local files (source.path); a Hub dataset streams with "
                              "source.streaming")
        if self.filters is not None and self.format != "text":
            raise _problem_at("filters", "apply to format: text documents only")
        if self.filters is not None and self.filters.language and not self.languages:
            raise _problem_at("filters.language", "keeps documents in the card's `languages`, but that list is empty")
        return self

    @field_validator("media_dir")
    @classmethod
    def _absolute_media_dir(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Resolve now, against the card's folder, so rows can name images relative to it."""
        return None if value is None else _media_folder(value, info)

    @field_validator("media_roots")
    @classmethod
    def _absolute_media_roots(cls, value: list[str], info: ValidationInfo) -> list[str]:
        """Resolve and check each folder now, like media_dir."""
        return [_media_folder(folder, info) for folder in value]

    @field_validator("license")
    @classmethod
    def _license_id(cls, value: str) -> str:
        """An id, not prose: model cards and Hub metadata need the short form."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.+-]*", value):
            raise ValueError("must be a license id such as 'apache-2.0', 'cc-by-4.0' or 'other' (no spaces)")
        return value

    @model_validator(mode="after")
    def _remember_file(self, info: ValidationInfo) -> DataCard:
        """Keep the card's own path (from the loader's context) for messages about its rows."""
        card_file = (info.context or {}).get("card_file")
        self._card_file = Path(card_file) if card_file else None
        return self

    @property
    def card_file(self) -> Path | None:
        """Absolute path of the YAML file this card was read from (None when built in code)."""
        return self._card_file

    @property
    def media_base(self) -> Path:
        """Folder relative image/video paths resolve against: media_dir, else the card's folder, else the cwd."""
        if self.media_dir:
            return Path(self.media_dir)
        return self._card_file.parent if self._card_file else Path.cwd()

    @property
    def source_paths(self) -> list[str]:
        """Absolute file paths/globs of a local source; empty for a Hub source."""
        return list(self.source.path) if isinstance(self.source, LocalSource) else []

    def source_files(self) -> list[Path]:
        """Every existing file a local source names, globs expanded, sorted, each (real) file once."""
        return sorted(Path(m) for m in expand_patterns(self.source_paths))
