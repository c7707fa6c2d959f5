"""Generation eval on tiny models through the CLI: a CoT run with eval before and after training written to the run
dir, metrics.jsonl and the model card's model-index; `qwen35-tune eval` on a model folder and on the finished run;
batched (left-padded) generation equal to one prompt at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from qwen35_tune.cli import main

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.smoke


@pytest.fixture(scope="module")
def cot_run(tmp_path_factory) -> Path:
    """tiny-cot-math, shortened: 3 steps, eval of 3 held-out rows at start and end, merged (so a card is written)."""
    run_dir = tmp_path_factory.mktemp("cot")
    overrides = ["train.max_steps=3", "train.max_length=512", "train.per_device_train_batch_size=2",
                 "eval.limit=3", "eval.max_new_tokens=12", "export.merge=true", "export.verify=false"]
    assert main(["train", str(REPO / "recipes/tiny/cot_math.yaml"), "--output-dir", str(run_dir), *overrides]) == 0
    return run_dir


def _samples(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cot_run_evaluates_before_and_after_into_run_dir_metrics_and_card(cot_run):
    before = json.loads((cot_run / "eval/step_000000/math.json").read_text())
    after = json.loads((cot_run / "eval/math.json").read_text())
    assert (before["step"], after["step"]) == (0, 3)
    for report in (before, after):
        metrics = report["modes"]["thinking"]
        assert report["n"] == metrics["n"] == 3 and metrics["budget"] == 12
        assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["extractable"] <= 1
        assert report["rows_from"] == "held-out rows of cot_arithmetic"
        assert report["contamination"]["exact_duplicates"] == 0
    samples = _samples(cot_run / "eval/math.samples.jsonl")
    assert len(samples) == 3
    assert {"prompt", "output", "extracted", "gold", "verdict"} <= set(samples[0])
    assert samples[0]["prompt"].endswith("<|im_start|>assistant\n<think>\n")  # thinking mode
    assert samples[0]["verdict"] in {"correct", "wrong", "no-answer"}
    logged = [json.loads(line) for line in (cot_run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in logged if "gen_eval/math/thinking/accuracy" in r]
    assert steps == [0, 3]
    readme = (cot_run / "merged/README.md").read_text()
    header = yaml.safe_load(readme.split("---")[1])
    result = header["model-index"][0]["results"][0]
    assert result["metrics"][0]["type"] == "accuracy"
    assert result["metrics"][0]["value"] == pytest.approx(after["modes"]["thinking"]["accuracy"], abs=1e-4)


def test_cli_eval_on_a_model_folder_both_modes(tiny_dense, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["eval", str(tiny_dense), "--suite", "math", "--card", str(REPO / "data_cards/cot_arithmetic.yaml"),
            "--limit", "3", "--max-new-tokens", "8", "--mode", "both", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "math.json").read_text())
    assert set(report["modes"]) == {"thinking", "non-thinking"} and report["n"] == 3
    assert report["contamination"] is None  # a bare model folder: no training cards to check against
    samples = _samples(out / "math.samples.jsonl")
    assert [s["mode"] for s in samples] == ["thinking"] * 3 + ["non-thinking"] * 3
    assert samples[3]["prompt"].endswith("<think>\n\n</think>\n\n")  # enable_thinking=False
    assert samples[0]["gold"] == "80"  # the card's check column
    assert "math (thinking): " in capsys.readouterr().out


def test_cli_eval_on_the_run_scores_its_held_out_rows(cot_run, tmp_path):
    assert main(["eval", str(cot_run), "--suite", "math", "--limit", "3", "--max-new-tokens", "12",
                 "--out", str(tmp_path)]) == 0
    mine = _samples(tmp_path / "math.samples.jsonl")
    during = _samples(cot_run / "eval/math.samples.jsonl")
    assert [s["origin"] for s in mine] == [s["origin"] for s in during]
    # the merged folder is the trained model: greedy outputs equal the ones the callback saw at the end
    assert [s["output"] for s in mine] == [s["output"] for s in during]


def test_eval_without_rows_is_a_user_error(tiny_dense, capsys):
    assert main(["eval", str(tiny_dense), "--suite", "code"]) == 2
    assert "--card" in capsys.readouterr().err


def test_batched_generation_equals_one_prompt_at_a_time(tiny_dense):
    from qwen35_tune.eval.generate import generate_answers, load_for_eval

    model, tokenizer, _ = load_for_eval(tiny_dense)
    prompts = [[{"role": "user", "content": text}] for text in
               ("Hi", "Ben has 10 pencils, gives away 2, then buys 2 boxes of 12 pencils each.", "What is 7 * 8?")]
    _, batched = generate_answers(model, tokenizer, prompts, "non-thinking", max_new_tokens=10, batch_size=3)
    _, single = generate_answers(model, tokenizer, prompts, "non-thinking", max_new_tokens=10, batch_size=1)
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(g.new_tokens > 0 for g in batched)
    assert model.config.use_cache is not None and not model.training


def test_cli_eval_on_the_adapter_folder_matches_the_merged_model(cot_run, tmp_path):
    """An adapter folder is put on the base it names (adapter_config.json) and scores like the merged model."""
    argv = ["--suite", "math", "--card", str(REPO / "data_cards/cot_arithmetic.yaml"), "--limit", "2",
            "--max-new-tokens", "10"]
    assert main(["eval", str(cot_run / "adapter"), *argv, "--out", str(tmp_path / "a")]) == 0
    assert main(["eval", str(cot_run / "merged"), *argv, "--out", str(tmp_path / "m")]) == 0
    adapter, merged = (_samples(tmp_path / d / "math.samples.jsonl") for d in ("a", "m"))
    assert [s["output"] for s in adapter] == [s["output"] for s in merged]
