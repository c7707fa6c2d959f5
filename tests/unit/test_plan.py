"""The memory planner: parameter counts equal the real modules, per-GPU numbers are within 15% of a hand
calculation from the config, and the verdicts for well-known cases are the ones practitioners report."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen35_tune.errors import UserError
from qwen35_tune.plan import (
    GB,
    count_params,
    estimate,
    load_model_config,
    lora_params,
    make_plan,
    parse_gpus,
    setup_from_recipe,  # fmt: skip
)
from qwen35_tune.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]
R9B = REPO / "recipes" / "qwen3_5_9b" / "lora.yaml"
R35B = REPO / "recipes" / "qwen3_5_35b_a3b" / "lora.yaml"


def _hand_params(cfg: dict) -> float:
    """Big matrices only, straight from the config (norms, biases, conv and router are left out)."""
    t, v = cfg["text_config"], cfg["vision_config"]
    h = t["hidden_size"]
    kd, vd = t["linear_num_key_heads"] * t["linear_key_head_dim"], t["linear_num_value_heads"] * t[
        "linear_value_head_dim"]  # fmt: skip
    gdn = h * (2 * kd + vd) + 2 * h * vd
    attn = h * t["num_attention_heads"] * t["head_dim"] * 3 + 2 * h * t["num_key_value_heads"] * t["head_dim"]
    if "num_experts" in t:
        mlp = 3 * h * t["moe_intermediate_size"] * t["num_experts"] + 3 * h * t["shared_expert_intermediate_size"]
    else:
        mlp = 3 * h * t["intermediate_size"]
    n = t["num_hidden_layers"]
    layers = (n // 4) * attn + (n - n // 4) * gdn + n * mlp
    vision = v["depth"] * (4 * v["hidden_size"] ** 2 + 2 * v["hidden_size"] * v["intermediate_size"])
    return 2 * t["vocab_size"] * h + layers + vision


@pytest.mark.parametrize("model", ["Qwen/Qwen3.5-9B", "Qwen/Qwen3.5-35B-A3B"])
def test_parameter_count_within_15_percent_of_hand_calculation(model):
    cfg = load_model_config(model)
    assert count_params(cfg).total == pytest.approx(_hand_params(cfg), rel=0.15)


def test_shipped_config_numbers():
    t9 = load_model_config("Qwen/Qwen3.5-9B")["text_config"]
    assert (t9["hidden_size"], t9["num_hidden_layers"], t9["intermediate_size"], t9["vocab_size"]) == (
        4096, 32, 12288, 248320)
    t35 = load_model_config("Qwen/Qwen3.5-35B-A3B")["text_config"]
    assert (t35["hidden_size"], t35["num_hidden_layers"], t35["num_experts"], t35["num_experts_per_tok"]) == (
        2048, 40, 256, 8)
    assert 9.0e9 < count_params(load_model_config("Qwen/Qwen3.5-9B")).total < 10.0e9
    assert 34e9 < count_params(load_model_config("Qwen/Qwen3.5-35B-A3B")).total < 36e9


@pytest.mark.parametrize("kind", ["dense", "moe", "vision"])
def test_counts_equal_the_real_modules(kind):
    import torch
    import transformers

    cfg = load_model_config(f"tiny://{kind}")
    config = transformers.AutoConfig.for_model(**{k: v for k, v in cfg.items() if k != "architectures"})
    with torch.device("meta"):
        model = getattr(transformers, cfg["architectures"][0])(config)
    assert count_params(cfg).total == sum(p.numel() for p in model.parameters())


def test_lora_count_equals_peft(tiny_dense):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    recipe = load_recipe(R9B, ["model.name_or_path=tiny://dense", "method.lora.r=8"])
    model = AutoModelForCausalLM.from_pretrained(tiny_dense, dtype=torch.float32)
    names = ["q_proj", "k_proj", "v_proj", "o_proj", "in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a",
             "out_proj", "gate_proj", "up_proj", "down_proj"]  # fmt: skip
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=names))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert lora_params(load_model_config("tiny://dense"), recipe) == trainable


def test_full_finetune_zero3_bytes_match_hand_calculation():
    cfg = load_model_config("Qwen/Qwen3.5-35B-A3B")
    recipe = load_recipe(R35B, ["method.kind=full"])
    setup = setup_from_recipe(recipe, cfg)
    params = _hand_params(cfg)
    e = estimate(count_params(cfg), setup, "zero3", 8)
    assert e.optimizer == pytest.approx(12 * params / 8, rel=0.15)  # fp32 master + Adam m, v, sharded 8 ways
    assert e.grads == pytest.approx(2 * params / 8, rel=0.15)
    tokens = setup.micro_batch * setup.max_length
    assert e.logits == pytest.approx(tokens * 248320 * 10, rel=0.01)
    ddp = estimate(count_params(cfg), setup, "ddp", 8)
    assert ddp.total == pytest.approx(16 * params + ddp.activations + ddp.logits, rel=0.15)


def test_9b_lora_on_one_24gb_gpu_needs_qlora_or_offload():
    plan = make_plan(load_recipe(R9B), load_model_config("Qwen/Qwen3.5-9B"), parse_gpus("1x24GB"))
    assert plan.estimates["ddp"].total > 24 * GB  # bf16 weights alone are ~19 GB
    assert plan.recommended == "zero3_offload"
    assert plan.suggestion.startswith("method.kind: qlora")
    qlora = make_plan(load_recipe(R9B, ["method.kind=qlora"]), load_model_config("Qwen/Qwen3.5-9B"),
                      parse_gpus("1x24GB"))
    assert qlora.recommended == "ddp" and qlora.micro_batch == 1


def test_9b_lora_on_one_h100_runs_plain_with_recipe_batch():
    plan = make_plan(load_recipe(R9B), load_model_config("Qwen/Qwen3.5-9B"), parse_gpus("1xH100-80GB"))
    assert (plan.recommended, plan.micro_batch, plan.grad_accum) == ("ddp", 4, 8)


def test_35b_full_on_8x80gb_needs_zero3_offload():
    plan = make_plan(load_recipe(R35B, ["method.kind=full"]), load_model_config("Qwen/Qwen3.5-35B-A3B"),
                     parse_gpus("8xH100-80GB"))
    for strategy in ("ddp", "zero2", "zero3"):
        assert plan.estimates[strategy].total > 80 * GB, strategy
    assert plan.recommended == "zero3_offload"
    assert plan.micro_batch * plan.grad_accum * 8 >= plan.global_batch
    # on 16 GPUs plain ZeRO-3 fits
    assert make_plan(load_recipe(R35B, ["method.kind=full"]), load_model_config("Qwen/Qwen3.5-35B-A3B"),
                     parse_gpus("16xH100-80GB")).recommended == "zero3"


def test_nothing_fits_names_the_smallest_change():
    plan = make_plan(load_recipe(R35B, ["method.kind=full"]), load_model_config("Qwen/Qwen3.5-35B-A3B"),
                     parse_gpus("1x24GB"))
    assert plan.recommended is None and plan.suggestion


@pytest.mark.parametrize("text,expected", [("8xH100-80GB", (8, "H100", 80.0)), ("1xH200-141GB", (1, "H200", 141.0)),
                                           ("2x24GB", (2, "GPU", 24.0))])  # fmt: skip
def test_parse_gpus(text, expected):
    g = parse_gpus(text)
    assert (g.count, g.name, g.memory_gb) == expected


@pytest.mark.parametrize("text", ["8xH100", "H100-80GB", "0x80GB"])
def test_parse_gpus_rejects(text):
    with pytest.raises(UserError, match="--gpus"):
        parse_gpus(text)


def test_plan_cli(capsys):
    from qwen35_tune.cli import main

    assert main(["plan", str(R9B), "--gpus", "1xH100-80GB"]) == 0
    out = capsys.readouterr().out
    assert "recommended: --launch ddp" in out and "zero3_offload" in out
