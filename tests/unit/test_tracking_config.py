"""The run config sent to trackers: provenance fields, and secrets from the environment redacted wherever they
appear (e.g. a token pasted into a model path or a card path)."""

from __future__ import annotations

from pathlib import Path

from qwen35_tune.recipe import load_recipe
from qwen35_tune.train.tracking import REDACTED, git_revision, redact_secrets, run_config

REPO = Path(__file__).resolve().parents[2]


def test_redact_secrets_replaces_values_of_secret_named_variables_only():
    env = {"HF_TOKEN": "hf_abcdef123456", "WANDB_API_KEY": "k" * 40, "HOME": "/home/me", "SHORT_TOKEN": "abc"}
    value = {"a": "https://user:hf_abcdef123456@host", "b": ["k" * 40, 3], "c": "/home/me/x", "d": "abc"}
    assert redact_secrets(value, env) == {"a": f"https://user:{REDACTED}@host", "b": [REDACTED, 3],
                                          "c": "/home/me/x", "d": "abc"}  # fmt: skip


def test_run_config_names_recipe_model_cards_and_revision(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_neverInConfig999")
    recipe = load_recipe(REPO / "recipes" / "tiny" / "sft_lora.yaml",
                         ["model.name_or_path=someorg/hf_neverInConfig999"])
    config = run_config(recipe)
    assert config["recipe"] == "tiny-sft-lora" and config["method"] == "lora"
    assert config["model"] == f"someorg/{REDACTED}"
    assert [c["name"] for c in config["data_cards"]] == ["tiny_chat"]
    assert config["git_revision"] == git_revision()
    assert config["recipe_files"] == [str(REPO / "recipes" / "tiny" / "sft_lora.yaml")]


def test_git_revision_is_none_outside_a_checkout(tmp_path):
    assert git_revision(tmp_path) is None
