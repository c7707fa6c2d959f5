"""The planner counts what ``train`` builds: its module list equals the meta-device model of every config, and its
trainable parameters equal peft's count (through the project's own build_lora_config / freezing) for every shipped
recipe and the target options they do not cover, group by group."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen35_tune.errors import UserError
from qwen35_tune.plan import load_model_config
from qwen35_tune.plan_shapes import build_shapes
from qwen35_tune.plan_trainable import count_trainable
from qwen35_tune.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(str(p.relative_to(REPO)) for p in (REPO / "recipes").rglob("*.yaml"))
CONFIGS = ["Qwen/Qwen3.5-9B", "Qwen/Qwen3.5-35B-A3B", "tiny://dense", "tiny://moe", "tiny://vision",
           "tiny://moe-vision"]  # fmt: skip


def _meta_model(config: dict):
    """The class the config names, built on the meta device (as models.load.model_class picks it)."""
    import torch
    import transformers

    hf_config = transformers.AutoConfig.for_model(**{k: v for k, v in config.items()
                                                     if k not in ("architectures", "_comment")})  # fmt: skip
    with torch.device("meta"):
        return getattr(transformers, config["architectures"][0])(hf_config)


def _groups(named) -> dict[str, int]:
    from qwen35_tune.train.freeze import group_of

    out: dict[str, int] = {}
    for name, n in named:
        out[group_of(name)] = out.get(group_of(name), 0) + n
    return out


_PEFT_CACHE: dict[str, dict[str, int]] = {}


def _train_counts(recipe) -> dict[str, int]:
    """Trainable parameters per group as ``train`` leaves them: peft on the meta model, or the full-FT freezing."""
    key = recipe.model_dump_json(include={"model": {"name_or_path"}, "method": True, "train": {"learning_rates"}})
    if key in _PEFT_CACHE:
        return _PEFT_CACHE[key]
    import torch

    from qwen35_tune.train.freeze import apply_freeze
    from qwen35_tune.train.param_groups import effective_freeze
    from qwen35_tune.train.peft_setup import build_lora_config

    model = _meta_model(load_model_config(recipe.model.name_or_path))
    if recipe.method.kind == "full":
        apply_freeze(model, effective_freeze(recipe))
    else:
        from peft import get_peft_model

        with torch.device("meta"):  # adapters on meta too: no 3.7 GB of CPU init for the 35B's expert LoRA
            model = get_peft_model(model, build_lora_config(recipe, model))
    _PEFT_CACHE[key] = _groups((n, p.numel()) for n, p in model.named_parameters() if p.requires_grad)
    return _PEFT_CACHE[key]


def _plan_counts(recipe) -> dict[str, int]:
    shapes = build_shapes(load_model_config(recipe.model.name_or_path))
    return count_trainable(recipe, shapes).by_group()


@pytest.mark.parametrize("name", CONFIGS)
def test_module_list_equals_the_meta_model(name):
    config = load_model_config(name)
    real = {n: tuple(p.shape) for n, p in _meta_model(config).named_parameters()}
    assert {n: s for n, s, _ in build_shapes(config).named_parameters()} == real


# peft on a real-size meta model takes seconds per distinct LoRA setting (the 35B's expert LoRA up to 8 s): the default
# run counts the tiny recipes (tiny://moe has the experts, router and shared expert) and the 9B LoRA recipe, the slow
# lane every real-size recipe. The 35B's own sizes stay in the default run through
# test_module_list_equals_the_meta_model and test_35b_lora_counts_the_routed_experts.
DEFAULT_REAL = {"recipes/qwen3_5_9b/lora.yaml"}


def _lane(path: str) -> tuple:
    return () if path.startswith("recipes/tiny/") or path in DEFAULT_REAL else (pytest.mark.slow,)


@pytest.mark.parametrize("path", [pytest.param(path, marks=_lane(path)) for path in SHIPPED])
def test_trainable_equals_peft_for_every_shipped_recipe(path):
    recipe = load_recipe(REPO / path)
    assert _plan_counts(recipe) == _train_counts(recipe)


VARIANTS = [  # options the shipped recipes leave out, on the real and tiny configs
    ("recipes/qwen3_5_35b_a3b/lora.yaml", ["method.lora.target_modules=[attention, router, embeddings, lm_head]"]),
    ("recipes/qwen3_5_35b_a3b/lora.yaml", ["method.lora.target_modules=[shared_expert]",
                                           "method.lora.target_parameters=[mlp.experts.down_proj]",
                                           "method.acknowledge_untouched=true"]),
    ("recipes/qwen3_5_35b_a3b/lora.yaml", ["method.lora.target_modules=[linear_attention, vision, projector]",
                                           "method.lora.bias=all"]),
    ("recipes/qwen3_5_9b/lora.yaml", [r"method.lora.target_modules=.*\.(q_proj|down_proj|linear_fc2)"]),
    ("recipes/qwen3_5_9b/lora.yaml", ["method.lora.target_modules=[q_proj, linear_attn.out_proj, attn.qkv]",
                                      "method.lora.bias=lora_only", "method.lora.use_dora=true"]),
    ("recipes/qwen3_5_9b/full.yaml", ["method.freeze=[vision, embeddings]"]),
    ("recipes/qwen3_5_9b/full.yaml", ["method.freeze=null", "train.learning_rates.projector=1e-5"]),
    ("recipes/qwen3_5_35b_a3b/full.yaml", ["method.freeze=[language_model]", "train.learning_rates.vision=1e-5"]),
    ("recipes/tiny/moe_lora.yaml", ["model.name_or_path=tiny://moe-vision",
                                    "method.lora.target_modules=[all, projector, router]"]),
]


# Each variant on its real model (slow lane) and on the tiny twin of the same architecture (default run): the twin has
# the same module names (experts, shared expert, router, vision tower, projector), so it runs the same matching.
TINY_TWIN = {"qwen3_5_9b": "tiny://vision", "qwen3_5_35b_a3b": "tiny://moe-vision", "tiny": None}


def _variants() -> list:
    out = []
    for i, (path, overrides) in enumerate(VARIANTS):
        twin = TINY_TWIN[path.split("/")[1]]
        out.append(pytest.param(path, overrides, marks=() if twin is None else (pytest.mark.slow,), id=f"{path}-{i}"))
        if twin is not None:
            out.append(pytest.param(path, [*overrides, f"model.name_or_path={twin}"], id=f"{path}-{i}-{twin}"))
    return out


@pytest.mark.parametrize("path,overrides", _variants())
def test_trainable_equals_peft_for_other_target_options(path, overrides):
    recipe = load_recipe(REPO / path, overrides)
    assert _plan_counts(recipe) == _train_counts(recipe)


def test_35b_lora_counts_the_routed_experts():
    groups = _plan_counts(load_recipe(REPO / "recipes/qwen3_5_35b_a3b/lora.yaml"))
    # r=16 on 40 layers x 256 experts x (gate_up: 2048 + 1024, down: 512 + 2048)
    assert groups["routed_experts"] == 40 * 16 * 256 * ((2048 + 1024) + (512 + 2048)) == 922_746_880
    assert round(sum(groups.values()) / 1e6, 1) == 945.2


@pytest.mark.parametrize("path", ["recipes/qwen3_5_9b/vision_lora.yaml", "recipes/qwen3_5_35b_a3b/vision_lora.yaml"])
def test_list_form_targets_count_language_model_and_projector(path):
    recipe = load_recipe(REPO / path)
    trainable = count_trainable(recipe, build_shapes(load_model_config(recipe.model.name_or_path)))
    parts = trainable.by_part()
    out = load_model_config(recipe.model.name_or_path)["text_config"]["hidden_size"]
    merged = 1152 * 4
    assert parts["projector"] == recipe.method.lora.r * ((merged + merged) + (merged + out))  # merger fc1, fc2
    assert parts["language_model"] > 80e6 and "vision" not in parts


@pytest.mark.parametrize("overrides,message", [
    (["method.lora.target_modules=.*mlp"], "container of other modules"),
    (["method.lora.target_modules=.*conv1d"], "groups=8192"),
    ([r"method.lora.target_modules=.*\.q_proj", "train.learning_rates.projector=1e-5"], "learning_rates.projector"),
    (["method.lora.use_dora=true"], "method.lora.use_dora"),
])  # fmt: skip
def test_plan_refuses_what_train_refuses(overrides, message):
    recipe = load_recipe(REPO / "recipes/qwen3_5_35b_a3b/lora.yaml", overrides)
    with pytest.raises(UserError, match=message):
        count_trainable(recipe, build_shapes(load_model_config(recipe.model.name_or_path)))
