"""build_datasets renders through the on-disk cache: a second build reads it, with identical rows, stats and
quarantine; a changed chat option renders again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from qwen35_tune.data.build import build_datasets
from tests.unit.data_kit import write_recipe
from tests.unit.test_data_build import FIXTURES


def test_second_build_reads_cache_with_same_stats(tmp_path, tiny_tokenizer, monkeypatch):
    monkeypatch.setenv("QWEN35_TUNE_CACHE", str(tmp_path / "cache"))
    shutil.copytree(FIXTURES, tmp_path / "cards")
    recipe = write_recipe(tmp_path, "  cards: [{path: cards/mixed.yaml}]")
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        train, _, stats = build_datasets(recipe, tiny_tokenizer, tmp_path / name)
        runs.append((train["input_ids"], train["labels"], stats, (tmp_path / name / "quarantine.jsonl").read_text()))
        if name == "a":
            cached = sorted((tmp_path / "cache" / "rendered").glob("render-*.arrow"))
            assert len(cached) == 1
    assert runs[0] == runs[1] and len(json.loads(json.dumps(runs[0][2]))["cards"]) == 1
    assert sorted((tmp_path / "cache" / "rendered").glob("render-*.arrow")) == cached  # read, not rendered again
    recipe = write_recipe(tmp_path, "  cards: [{path: cards/mixed.yaml}]", ["chat.train_on=all"])
    build_datasets(recipe, tiny_tokenizer, None)
    assert len(list(Path(tmp_path / "cache" / "rendered").glob("render-*.arrow"))) == 2
