"""The commonest mistake, a model.name_or_path that is not there (a missing folder, a hub id not in the cache while
offline, a folder without a tokenizer, an architecture transformers does not know), is exit 2 with the setting and
what to do, on every path that loads a checkpoint: train, preview, data stats, eval, merge, verify. Never a
traceback, and train refuses before building data or creating its run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen35_tune.cli import main

REPO = Path(__file__).resolve().parents[2]
RECIPE = str(REPO / "recipes" / "tiny" / "sft_lora.yaml")
UNCACHED = "someorg/not-in-any-cache-model"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _run(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text and "internal error" not in text, text
    return code, " ".join(text.split())  # rich wraps long lines


@pytest.mark.parametrize("command", ["train", "preview", "data"])
def test_missing_folder_and_uncached_hub_id(command, tmp_path, capsys):
    for name, expected in (("./no/such/model-folder", "no such folder './no/such/model-folder'"),
                           (UNCACHED, "not in the local Hugging Face cache"),
                           ("not a valid id!!", "neither an existing folder nor a valid hub id")):  # fmt: skip
        out = tmp_path / f"{command}-{abs(hash(name))}"
        argv = ([command, RECIPE] if command != "data" else ["data", "stats", RECIPE]) + [f"model.name_or_path={name}"]
        argv += ["--output-dir", str(out)] if command != "preview" else []
        code, text = _run(argv, capsys)
        assert code == 2, text
        assert "model.name_or_path:" in text and expected in text, text
        if command == "train":
            assert not out.exists()  # refused before the run directory, the data build or any download


def test_uncached_hub_id_says_how_to_get_it(capsys):
    code, text = _run(["preview", RECIPE, f"model.name_or_path={UNCACHED}"], capsys)
    assert code == 2 and "HF_HUB_OFFLINE=1" in text and f"hf download {UNCACHED}" in text


def test_folder_without_tokenizer_or_with_unknown_architecture(tiny_dense, tmp_path, capsys):
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    (config_only / "config.json").write_text((tiny_dense / "config.json").read_text())
    code, text = _run(["preview", RECIPE, f"model.name_or_path={config_only}"], capsys)
    assert code == 2 and str(config_only) in text, text  # transformers builds an empty tokenizer: no template

    unknown = tmp_path / "unknown_arch"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"model_type": "brand_new_arch_9000"}))
    code, text = _run(["train", RECIPE, f"model.name_or_path={unknown}", "--output-dir", str(tmp_path / "r")], capsys)
    assert code == 2 and "model.name_or_path:" in text and "brand_new_arch_9000" in text, text


def test_eval_merge_and_verify_name_the_base(tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": UNCACHED}))
    card = str(REPO / "data_cards" / "cot_arithmetic.yaml")
    code, text = _run(["eval", str(adapter), "--suite", "math", "--card", card], capsys)
    assert code == 2 and "base_model_name_or_path" in text and "not in the local Hugging Face cache" in text, text

    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"base_model": UNCACHED, "base_path": UNCACHED, "method": "lora",
                                              "weights": "adapter"}))  # fmt: skip
    code, text = _run(["merge", str(run)], capsys)
    assert code == 2 and "model.name_or_path:" in text and "not in the local Hugging Face cache" in text, text
    code, text = _run(["merge", str(run), "--base", "/no/such/base"], capsys)
    assert code == 2 and "--base: no such folder '/no/such/base'" in text, text
    code, text = _run(["verify", str(tmp_path), "--base", UNCACHED], capsys)
    assert code == 2 and "--base:" in text and "not in the local Hugging Face cache" in text, text


def test_describe_maps_hub_exceptions():
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    from qwen35_tune.models.source_errors import describe

    assert "valid hub id" in describe(HFValidationError("Repo id must be in the form"), "a b c")
    assert "not in the local Hugging Face cache" in describe(LocalEntryNotFoundError("no snapshot"), "org/x")
    assert describe(ValueError("an unrelated bug"), "org/x") is None  # not ours to map: stays an internal error
