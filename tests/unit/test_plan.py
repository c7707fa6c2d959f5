"""The memory planner: parameter counts from the config, per-GPU bytes against hand calculations for the real
configs (the chunked LM-head loss, 4-bit experts, activations under checkpointing), QLoRA never planned sharded, and
the verdicts say plainly what to change with the memory of the recommended setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen35_tune.errors import UserError
from qwen35_tune.plan import GB, format_plan, load_model_config, make_plan, parse_gpus, setup_from_recipe
from qwen35_tune.plan_memory import estimate
from qwen35_tune.plan_shapes import build_shapes
from qwen35_tune.plan_trainable import count_trainable
from qwen35_tune.recipe import load_recipe
from qwen35_tune.train.strategy_checks import SHARDED

REPO = Path(__file__).resolve().parents[2]
R9B = REPO / "recipes" / "qwen3_5_9b" / "lora.yaml"
R35B = REPO / "recipes" / "qwen3_5_35b_a3b" / "lora.yaml"
C9B, C35B = load_model_config("Qwen/Qwen3.5-9B"), load_model_config("Qwen/Qwen3.5-35B-A3B")


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


def _estimate(recipe, config, strategy="ddp", world=1):
    shapes = build_shapes(config)
    trainable = count_trainable(recipe, shapes)
    setup = setup_from_recipe(recipe, shapes)
    return estimate(shapes, trainable, setup, strategy, world), setup, trainable


@pytest.mark.parametrize("cfg", [C9B, C35B], ids=["9b", "35b"])
def test_parameter_count_within_15_percent_of_hand_calculation(cfg):
    assert build_shapes(cfg).total == pytest.approx(_hand_params(cfg), rel=0.15)


def test_shipped_config_numbers():
    t9, t35 = C9B["text_config"], C35B["text_config"]
    assert (t9["hidden_size"], t9["num_hidden_layers"], t9["intermediate_size"], t9["vocab_size"]) == (
        4096, 32, 12288, 248320)
    assert (t35["hidden_size"], t35["num_hidden_layers"], t35["num_experts"], t35["num_experts_per_tok"]) == (
        2048, 40, 256, 8)
    assert 9.0e9 < build_shapes(C9B).total < 10.0e9 and 34e9 < build_shapes(C35B).total < 36e9


def test_lm_head_is_trls_chunked_loss_not_full_logits():
    e, setup, _ = _estimate(load_recipe(R9B), C9B)
    tokens, h = 4 * 4096, 4096
    # kept hidden states (bf16) + fp32 hidden gradient + its bf16 cast + fp32 per-token stats + one 4096x32768 tile
    hand = tokens * h * (2 + 4 + 2) + 8 * tokens * 4 + 4096 * 32768 * 2
    assert setup.tokens == tokens and e.lm_head == pytest.approx(hand, rel=0.01)
    assert e.lm_head < 1 * GB  # full bf16 logits + fp32 upcast + gradient would be 10 B x tokens x vocab = 40.7 GB


def test_9b_lora_total_near_hand_calculation():
    """~27-33 GB: bf16 weights 18.8 GB, fp32 adapters + grads + AdamW 1.4 GB, 32 checkpointed layer inputs 4.3 GB,
    one recomputed layer (~4 GB) with its fla state rebuild (1.1 GB), the chunked LM head (0.8 GB)."""
    e, setup, trainable = _estimate(load_recipe(R9B), C9B)
    weights = build_shapes(C9B).total * 2
    adapters = trainable.total * (4 + 4 + 8)
    checkpoints = 32 * setup.tokens * 4096 * 2
    assert weights + adapters + checkpoints < e.total < 35 * GB
    assert e.total == pytest.approx(32 * GB, rel=0.12)


def test_35b_qlora_stores_the_experts_in_4_bit():
    recipe = load_recipe(REPO / "recipes" / "qwen3_5_35b_a3b" / "qlora.yaml")
    e, setup, trainable = _estimate(recipe, C35B)
    shapes = build_shapes(C35B)
    experts = sum(m.numel for m in shapes.modules if m.kind == "experts")
    bf16_rest = sum(m.numel for m in shapes.modules if m.kind not in ("experts", "linear")) * 2
    assert e.weights < experts * 0.55 + 6 * GB  # 0.516 B per expert weight, not 2
    assert e.weights > experts * 0.5 + bf16_rest
    assert setup.quant_bytes == pytest.approx(0.5 + 1 / 64 + 4 / (64 * 256))
    # trained adapters in bf16 (TRL casts them for quantized models), torch AdamW states in bf16
    assert e.optimizer == pytest.approx(trainable.total * 4)


def test_moe_layer_working_set_includes_expert_stacks():
    """LoRA on the fused experts materialises base + B@A per stack in each layer's forward (and its gradient)."""
    with_experts, _, _ = _estimate(load_recipe(R35B), C35B)
    without, _, _ = _estimate(load_recipe(R35B, ["method.lora.target_modules=[attention, linear_attention, "
                                                 "shared_expert]", "method.acknowledge_untouched=true"]), C35B)
    stacks = 256 * (1024 * 2048 + 2048 * 512) * 2
    assert with_experts.activations - without.activations == pytest.approx(stacks + 256 * 1024 * 2048 * 2, rel=0.05)


def test_vision_recipes_count_the_projector_and_the_tower_activations():
    recipe = load_recipe(REPO / "recipes" / "qwen3_5_9b" / "vision_lora.yaml")
    e, setup, trainable = _estimate(recipe, C9B)
    assert setup.image_patches == 1003520 // 256
    assert trainable.by_part()["projector"] > 0
    text_only, _, _ = _estimate(load_recipe(R9B), C9B)
    assert e.activations > text_only.activations  # a frozen tower still runs one block at a time


def test_gdn_state_rebuild_scales_with_tokens():
    short, _, _ = _estimate(load_recipe(R9B, ["train.max_length=1024"]), C9B)
    long, _, _ = _estimate(load_recipe(R9B, ["train.max_length=8192"]), C9B)
    assert long.activations / short.activations == pytest.approx(8, rel=0.15)


@pytest.mark.parametrize("recipe", ["qwen3_5_9b/qlora.yaml", "qwen3_5_35b_a3b/qlora.yaml"])
@pytest.mark.parametrize("gpus", ["1x16GB", "8x16GB", "8x24GB", "8xH100-80GB", "1xH200-141GB", "2x12GB"])
def test_qlora_is_never_planned_sharded(recipe, gpus):
    r = load_recipe(REPO / "recipes" / recipe)
    plan = make_plan(r, load_model_config(r.model.name_or_path), parse_gpus(gpus))
    for name in SHARDED:
        assert plan.estimates[name].unsupported, name
    for choice in (plan.recommended, plan.alternative):
        assert choice is None or choice.strategy not in SHARDED
    text = format_plan(plan, r.model.name_or_path)
    assert all(line.split()[7] == "n/a" for line in text.splitlines() if line.startswith(tuple(SHARDED)))
    assert "--launch zero3" not in text and "--launch fsdp2" not in text


def test_9b_lora_on_one_24gb_gpu_needs_qlora_or_offload():
    plan = make_plan(load_recipe(R9B), C9B, parse_gpus("1x24GB"))
    assert plan.estimates["ddp"].total > 24 * GB  # bf16 weights alone are ~19 GB
    assert plan.recommended.strategy == "zero3_offload"
    assert plan.alternative.change == "method.kind: qlora" and plan.alternative.strategy == "ddp"


def test_9b_lora_on_one_h100_runs_plain_with_recipe_batch():
    plan = make_plan(load_recipe(R9B), C9B, parse_gpus("1xH100-80GB"))
    assert (plan.recommended.strategy, plan.recommended.micro_batch, plan.grad_accum) == ("ddp", 4, 8)


def test_35b_lora_on_8_h100_is_zero3_with_accumulation_for_the_same_global_batch():
    plan = make_plan(load_recipe(R35B), C35B, parse_gpus("8xH100-80GB"))
    assert plan.recommended.strategy == "zero3"
    assert plan.recommended.micro_batch * plan.grad_accum * 8 == plan.global_batch == 32
    text = format_plan(plan, "35B")  # the recipe states global_batch_size: accumulation is derived, not a setting
    assert "accumulation 2 derived from train.global_batch_size" in text
    assert "train.gradient_accumulation_steps" not in text


def test_35b_full_on_8x80gb_needs_zero3_offload():
    plan = make_plan(load_recipe(R35B, ["method.kind=full"]), C35B, parse_gpus("8xH100-80GB"))
    for strategy in ("ddp", "zero2", "zero3"):
        assert plan.estimates[strategy].total > 80 * GB, strategy
    assert plan.recommended.strategy == "zero3_offload"
    assert plan.recommended.micro_batch * plan.grad_accum * 8 >= plan.global_batch
    assert make_plan(load_recipe(R35B, ["method.kind=full"]), C35B,
                     parse_gpus("16xH100-80GB")).recommended.strategy == "zero3"  # fmt: skip


def test_every_row_no_still_recommends_with_its_memory():
    plan = make_plan(load_recipe(R9B, ["train.per_device_train_batch_size=16"]), C9B, parse_gpus("1x48GB"))
    text = format_plan(plan, "9B")
    assert [line.split()[7] for line in text.splitlines()[2:7]] == ["no"] * 5
    assert "every row says no" in text
    line = next(x for x in text.splitlines() if x.startswith("recommended:"))
    assert "train.per_device_train_batch_size: 8" in line and "accumulation 4 derived from" in line
    assert f"{plan.recommended.estimate.total / GB:.1f} GB of 44.2 GB usable per GPU" in line


def test_nothing_fits_names_the_change_and_its_memory():
    recipe = load_recipe(R9B, ["train.gradient_checkpointing=false", "train.max_length=16384",
                               "train.per_device_train_batch_size=1"])  # fmt: skip
    plan = make_plan(recipe, C9B, parse_gpus("1xH100-80GB"))
    assert plan.recommended is None
    text = format_plan(plan, "9B")
    assert "Does not fit on 1xH100-80GB" in text and f"needs {plan.needs_gb:.0f} GB per GPU" in text
    line = text.splitlines()[-1]
    assert line.startswith("Smallest change that fits: set train.gradient_checkpointing: true, then --launch ddp")
    assert f"{plan.alternative.estimate.total / GB:.1f} GB of 73.6 GB usable per GPU" in line


def test_nothing_within_reach_says_how_much_memory_is_needed():
    plan = make_plan(load_recipe(R35B, ["method.kind=full"]), C35B, parse_gpus("1x8GB"))
    text = format_plan(plan, "35B")
    assert plan.recommended is None and plan.alternative is None
    assert f"needs {plan.needs_gb:.0f} GB per GPU" in text and "Use GPUs with at least that much memory" in text


def test_eval_cost_stated_and_skipped_under_zero3():
    r35 = load_recipe(REPO / "recipes" / "qwen3_5_35b_a3b" / "cot_math.yaml")
    text = format_plan(make_plan(r35, C35B, parse_gpus("8xH100-80GB")), "35B")
    assert "skipped under zero3" in text and "per round on one H100" in text
    assert "or keep it with method.kind: qlora and --launch ddp" in text  # a replicated setting that fits
    r9 = load_recipe(REPO / "recipes" / "qwen3_5_9b" / "cot_math.yaml")
    text = format_plan(make_plan(r9, C9B, parse_gpus("1xH200-141GB")), "9B")
    assert "65,536 decode steps" in text  # 128 rows / batch 16 x 2 modes x 4096 tokens
    assert "min per round" in text


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

    assert main(["plan", str(R35B), "--gpus", "8xH100-80GB"]) == 0
    out = capsys.readouterr().out
    assert "945.2M trainable parameters (routed_experts 922.7M" in out and "recommended: --launch zero3" in out



def test_plan_imports_no_torch():
    """Closed-form counting keeps `plan` instant and usable where torch is not installed (a login node)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from qwen35_tune.cli import main\n"
        f"assert main(['plan', {str(R35B)!r}, '--gpus', '8xH100-80GB']) == 0\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'trl', 'accelerate') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
