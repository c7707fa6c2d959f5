"""stage: grpo on the tiny model: TRL's group advantages equal the GRPO formula on fixed rewards, the step guard counts
the tokens the loss saw, and bad input stops with exit 2 and a reason, before any model loads. (The tiny dense, MoE
and vision twins train through the CLI in tests/smoke/test_tiny_recipes.py.)"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from qwen35_tune.cli import main

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.smoke


# ---- group advantages --------------------------------------------------------------------------------------------

def _trainer(tmp_path: Path, overrides: list[str], reward_funcs: list, weights: list[float]):
    """A QwenGRPOTrainer built the way run_grpo builds it (recipe -> setup -> prompts -> config -> weights)."""
    from qwen35_tune.data.prompt_build import build_prompt_datasets
    from qwen35_tune.recipe import load_recipe
    from qwen35_tune.train.grpo import build_grpo_config
    from qwen35_tune.train.grpo_trainer import QwenGRPOTrainer
    from qwen35_tune.train.model_setup import setup_model

    recipe = load_recipe(REPO / "recipes/tiny/grpo_math.yaml", ["grpo.num_generations=4",
                                                                "train.per_device_train_batch_size=8", *overrides])
    setup = setup_model(recipe)
    train_ds, _, _ = build_prompt_datasets(recipe, setup.tokenizer)
    config = build_grpo_config(recipe, tmp_path, weights)
    loaded = setup.load_weights(config)
    trainer = QwenGRPOTrainer(model=loaded.model, reward_funcs=reward_funcs, args=config, train_dataset=train_ds,
                              processing_class=setup.tokenizer, peft_config=loaded.peft_config, run_dir=tmp_path)
    trainer.model.train()
    return trainer, train_ds


def _value(name: str, position: int):
    """A reward function reading its reward from the completion text ('0.25|1' -> 0.25 at position 0)."""
    def reward(completions, **kwargs):
        return [float(text.split("|")[position]) for text in completions]

    reward.__name__ = name
    return reward


GROUPS = [["1|0", "0|0", "0.5|1", "0.25|1"], ["0.7|1", "0.7|1", "0.7|1", "0.7|1"]]


def _advantages(tmp_path, scale: str, weights: list[float]) -> list[float]:
    """TRL's advantages for two prompts x four fixed completions, through _generate_and_score_completions."""
    trainer, train_ds = _trainer(tmp_path, [f"grpo.scale_rewards={scale}"], [_value("a", 0), _value("b", 1)], weights)
    tokenizer = trainer.processing_class
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    texts = [text for group in GROUPS for text in group]

    def fixed_completions(prompt_ids, images, multimodal_fields, num_generations):
        return [tokenizer(text, add_special_tokens=False)["input_ids"] + [eos] for text in texts], None

    trainer._generate_single_turn = fixed_completions  # only the sampling is replaced: rewards -> advantages is TRL's
    rows = [dict(train_ds[i]) for i in (0, 0, 0, 0, 1, 1, 1, 1)]  # TRL's sampler repeats each prompt G times
    out = trainer._generate_and_score_completions(rows)
    return out["advantages"].tolist()


def _by_hand(weights: list[float], scale: str) -> list[float]:
    """A_i = (r_i - mean(group)) / (std(group) + 1e-4), r = sum of weighted rewards, std with Bessel's correction
    (TRL's nanstd); scale_rewards: none leaves out the division (Dr. GRPO)."""
    out = []
    for group in GROUPS:
        rewards = [sum(w * float(v) for w, v in zip(weights, text.split("|"), strict=True)) for text in group]
        mean, std = statistics.fmean(rewards), statistics.stdev(rewards)
        out += [(r - mean) / (std + 1e-4) if scale == "group" else r - mean for r in rewards]
    return out


@pytest.mark.parametrize(("scale", "weights"), [("group", [1.0, 0.0]), ("group", [1.0, 0.5]), ("none", [2.0, 1.0])])
def test_group_advantages_equal_the_formula(tmp_path, scale, weights):
    got = _advantages(tmp_path, scale, weights)
    expected = _by_hand(weights, scale)
    assert got == pytest.approx(expected, abs=1e-5)
    assert got[4:] == [0.0] * 4  # a group whose completions all score the same teaches nothing
    assert any(abs(a) > 0.5 for a in got[:4])


def test_step_guard_counts_the_tokens_the_loss_saw(tmp_path):
    """GRPO's training_step gets prompt rows, not tokens: the step guard counts prompt + completion tokens."""
    import torch

    trainer, _ = _trainer(tmp_path, [], [_value("a", 0)], [1.0])
    batch = {"prompt_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]), "completion_mask": torch.tensor([[1, 1, 0],
                                                                                                    [1, 0, 0]])}
    trainer._step_batch = batch
    assert int(trainer.step_inputs([{"prompt": "x"}])["attention_mask"].sum()) == 8


# ---- bad input: exit 2 with the reason, before any weights load -------------------------------------------------

def test_bad_input_exits_2_with_its_reason(tmp_path, capsys):
    recipe = REPO / "recipes/tiny/grpo_math.yaml"
    assert main(["train", str(recipe), "train.packing=true", "--output-dir", str(tmp_path / "a")]) == 2
    assert "train.packing" in capsys.readouterr().err
    assert main(["train", str(recipe), "rewards.0.name=corect", "--output-dir", str(tmp_path / "b")]) == 2
    assert "did you mean 'correct'" in capsys.readouterr().err
    assert main(["train", str(recipe), "grpo.use_vllm=true", "--output-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "grpo.use_vllm" in err and "Traceback" not in err


def test_a_card_of_rows_with_nothing_to_check_stops_the_run(tmp_path, capsys):
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(5)))
    (tmp_path / "card.yaml").write_text("name: nochecks\nlicense: mit\nsource: {path: rows.jsonl}\n"
                                        "format: verifiable\n")
    (tmp_path / "r.yaml").write_text(f"extends: {REPO}/recipes/tiny/grpo_math.yaml\nname: bad\n"
                                     "data: {cards: [{path: card.yaml}]}\n")
    run_dir = tmp_path / "run"
    assert main(["train", str(tmp_path / "r.yaml"), "--output-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "data card 'nochecks': 5 of 5 rows are bad" in err and "nothing to check an answer against" in err
    assert "Traceback" not in err
    quarantined = [json.loads(line) for line in (run_dir / "quarantine.jsonl").read_text().splitlines()]
    assert len(quarantined) == 5 and all("nothing to check" in q["reason"] for q in quarantined)
