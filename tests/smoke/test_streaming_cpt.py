"""Continued pretraining from a streaming card on the tiny model: a run killed mid-way and continued with
``--resume auto`` trains exactly the token ids an uninterrupted run trains after the checkpoint (and ends with the same
weights); two data-parallel processes train disjoint documents whose union is the corpus."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import TrainerCallback

from qwen35_tune.cli import main
from qwen35_tune.train.resume import list_checkpoints
from qwen35_tune.train.trainer import QwenSFTTrainer
from tests.unit.stream_kit import needs_cpt_extra

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "tiny" / "cpt.yaml"
OVERRIDES = ["train.max_steps=6", "train.per_device_train_batch_size=1", "train.max_length=64",
             "train.packing_length=128", "train.save_strategy=steps", "train.save_steps=2", "train.logging_steps=1",
             "train.optim=sgd", "train.learning_rate=0.1", "method.lora.lora_dropout=0"]  # fmt: skip

pytestmark = [pytest.mark.smoke, needs_cpt_extra]  # recipes/tiny/cpt.yaml: near_dedupe, filters.language


class Crash(TrainerCallback):
    """Ends the process's training abruptly after a step, as a killed job does (no checkpoint for that step)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError("killed")


@pytest.fixture
def trained_ids(monkeypatch):
    """(step the batch trains, its token ids) of every micro-batch the trainer trains, in order."""
    seen: list[tuple[int, list]] = []
    original = QwenSFTTrainer.training_step

    def recording(self, model, inputs, num_items_in_batch=None):
        seen.append((self.state.global_step + 1, inputs["input_ids"].tolist()))
        return original(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(QwenSFTTrainer, "training_step", recording)
    return seen


def _adapter(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def test_killed_streaming_run_resumes_with_the_same_token_ids(tmp_path, trained_ids):
    from qwen35_tune.recipe import load_recipe
    from qwen35_tune.train.sft import run_sft

    whole = tmp_path / "whole"
    assert main(["train", str(RECIPE), "--output-dir", str(whole), *OVERRIDES]) == 0
    expected = list(trained_ids)
    assert [step for step, _ in expected] == [1, 2, 3, 4, 5, 6]
    trained_ids.clear()

    run_dir = tmp_path / "killed"
    with pytest.raises(RuntimeError, match="killed"):  # after step 5: checkpoint-4 is the newest
        run_sft(load_recipe(RECIPE, OVERRIDES), run_dir, callbacks=(Crash(5),))
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["checkpoint-2", "checkpoint-4"]
    state = json.loads((run_dir / "checkpoints/checkpoint-4/stream_state-rank0-of-1.json").read_text())["state"]
    assert state["step"] == 4 and state["sources"][0]["next"]["index"] > 0  # the position is saved, not recomputed
    assert trained_ids[:5] == expected[:5]
    trained_ids.clear()

    assert main(["train", str(RECIPE), "--output-dir", str(run_dir), *OVERRIDES, "--resume", "auto"]) == 0
    assert trained_ids == expected[4:]  # steps 5 and 6: the same rows, so the same token ids, in the same order
    for key, tensor in _adapter(whole).items():
        assert _adapter(run_dir)[key].equal(tensor), key
    stats = [json.loads((d / "data_stats.json").read_text())["stream"] for d in (whole, run_dir)]
    assert stats[0] == stats[1] and stats[0]["sources"][0]["tokens"] > 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PROBE = """
import json, os, sys
from qwen35_tune.train.trainer import QwenSFTTrainer
seen, original = [], QwenSFTTrainer.training_step
def recording(self, model, inputs, num_items_in_batch=None):
    seen.append(inputs["input_ids"].tolist())
    return original(self, model, inputs, num_items_in_batch)
QwenSFTTrainer.training_step = recording
from qwen35_tune.cli import main
code = main(sys.argv[1:])
with open(os.environ["PROBE_OUT"] + "-" + os.environ["RANK"] + ".json", "w") as fh:
    json.dump(seen, fh)
sys.exit(code)
"""


def test_two_ranks_train_disjoint_documents_that_make_up_the_corpus(tmp_path, tiny_tokenizer):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    docs = [f"DOC{i} " + " ".join(["ledger", "coupon", "audit", "yield"][(i + j) % 4] for j in range(i % 5 + 2))
            for i in range(12)]
    for shard in range(3):
        (corpus / f"part-{shard}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[shard::3]))
    (tmp_path / "corpus.yaml").write_text("name: corpus\nlicense: mit\nformat: text\nstreaming: true\n"
                                          "source: {path: 'corpus/*.jsonl'}\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"extends: {RECIPE}\nname: two-ranks\ndata:\n  cards: [{{path: corpus.yaml}}]\n")
    (tmp_path / "probe.py").write_text(PROBE)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(tmp_path / "probe.py"),
           "train", str(recipe), "--output-dir", str(tmp_path / "run"), "train.max_steps=6",
           "train.per_device_train_batch_size=1", "train.packing=false", "train.packing_length=null",
           "train.max_length=512"]  # fmt: skip
    env = {**__import__("os").environ, "PROBE_OUT": str(tmp_path / "seen")}
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2
    per_rank = []
    for rank in (0, 1):
        batches = json.loads((tmp_path / f"seen-{rank}.json").read_text())
        texts = [tiny_tokenizer.decode(row) for batch in batches for row in batch]
        per_rank.append({re.match(r"DOC\d+", t)[0] for t in texts})
        assert len(texts) == 6  # one document per step: each rank's whole share of the 12
    assert not per_rank[0] & per_rank[1]
    assert per_rank[0] | per_rank[1] == {f"DOC{i}" for i in range(12)}
    stats = json.loads((tmp_path / "run" / "data_stats.json").read_text())["stream"]
    assert stats["ranks"] == 2 and stats["sources"][0]["documents"] == 12  # summed over the ranks


def test_cpt_then_sft_on_its_merged_model(tmp_path):
    """The documented two-step chain (recipes/domains/finance_cpt.yaml, README "Continued pretraining"): continued
    pretraining merged, then instruction tuning with the merged folder as model.name_or_path."""
    cpt, sft = tmp_path / "cpt", tmp_path / "sft"
    assert main(["train", str(RECIPE), "--output-dir", str(cpt), "train.max_steps=2", "export.merge=true"]) == 0
    merged = cpt / "merged"
    assert (merged / "config.json").exists() and (merged / "tokenizer.json").exists()
    sft_recipe = REPO / "recipes" / "tiny" / "finance_lora.yaml"
    assert main(["train", str(sft_recipe), "--output-dir", str(sft), f"model.name_or_path={merged}",
                 "train.max_steps=2"]) == 0  # fmt: skip
    adapter = json.loads((sft / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(merged)
