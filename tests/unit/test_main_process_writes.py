"""Under ``accelerate launch`` every rank builds the data, but only rank 0 writes data_stats.json, quarantine.jsonl and
the resolved recipe (the same file written by N processes at once can come out torn)."""

from __future__ import annotations

import json

from qwen35_tune.data.build import build_datasets
from qwen35_tune.recipe import load_recipe
from qwen35_tune.train.distributed import main_process_dir


def _recipe(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"A{i}."}]}
            for i in range(4)] + ["{not json"]
    (tmp_path / "c.jsonl").write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    (tmp_path / "c.yaml").write_text("name: c\nlicense: mit\nsource: {path: c.jsonl}\nmax_bad_fraction: 0.5\n")
    (tmp_path / "r.yaml").write_text("name: t\nmodel: {name_or_path: 'tiny://dense'}\ntrain: {max_length: 64}\n"
                                     "data:\n  cards: [{path: c.yaml}]\n")
    return load_recipe(tmp_path / "r.yaml")


def test_only_rank_zero_writes_data_files(tmp_path, tiny_tokenizer, monkeypatch):
    recipe = _recipe(tmp_path)
    for rank, writes in (("1", False), ("0", True)):
        run = tmp_path / f"run{rank}"
        run.mkdir()
        monkeypatch.setenv("RANK", rank)
        train, _, stats = build_datasets(recipe, tiny_tokenizer, main_process_dir(run))
        assert len(train) == 4 and stats["cards"][0]["bad"] == {"bad JSON": 1}  # same data on every rank
        assert (run / "data_stats.json").exists() is writes
        assert (run / "quarantine.jsonl").exists() is writes
    monkeypatch.delenv("RANK")
    assert main_process_dir(tmp_path) == tmp_path  # a plain `python` run is rank 0
