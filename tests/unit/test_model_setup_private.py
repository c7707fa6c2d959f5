"""Canary for the upstream private names the model setup uses through ``qwen35_tune.patches``: torch's
parametrization cache (4-bit MoE experts), transformers' loaded-tensor mark and its resolved attention implementation.
They behave as relied on in the installed versions; outside the tested ranges the setup stops and says which."""

from __future__ import annotations

import pytest
import torch

from qwen35_tune import patches
from qwen35_tune.errors import UserError


class _Doubled(torch.nn.Module):
    """A parametrization that counts how often torch computes it."""

    calls = 0

    def forward(self, weight):
        _Doubled.calls += 1
        return weight * 2


def test_parametrization_cache_is_forgotten_per_module_and_tensor():
    import torch.nn.utils.parametrize as P

    layer, other = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    for module in (layer, other):
        P.register_parametrization(module, "weight", _Doubled())
    _Doubled.calls = 0
    with P.cached():
        _ = layer.weight, layer.weight, other.weight
        assert _Doubled.calls == 2  # computed once per module, then served from the cache
        patches.forget_parametrization_cache(layer, ["weight", "bias"])  # bias: never cached, nothing to drop
        _ = layer.weight, other.weight
        assert _Doubled.calls == 3  # only the forgotten one is computed again


def test_loaded_mark_makes_transformers_initialisation_skip_the_tensor(tiny_dense):
    from transformers import AutoConfig, AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_dense))
    marked, unmarked = model.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.down_proj.weight
    with torch.no_grad():
        marked.fill_(7.0), unmarked.fill_(7.0)
    for module in model.modules():
        module._is_hf_initialized = False  # as for a freshly built model before its weights arrive
    patches.mark_loaded(marked)
    model.initialize_weights()
    assert bool((marked == 7.0).all()) and not bool((unmarked == 7.0).all())


def test_loaded_attn_implementation_is_what_transformers_resolved(tiny_dense):
    from qwen35_tune.models.load import load_model

    assert patches.loaded_attn_implementation(load_model(str(tiny_dense), "float32", attn_implementation="eager")
                                              .config) == "eager"  # fmt: skip
    assert patches.loaded_attn_implementation(load_model(str(tiny_dense), "float32").config) == "sdpa"


@pytest.mark.parametrize("module_name,version,experts", [("transformers", "6.0.0", False),
                                                         ("transformers", "5.1.0", False),
                                                         ("torch", "3.0.0", True)])  # fmt: skip
def test_outside_the_tested_ranges_the_setup_stops_with_the_versions(monkeypatch, module_name, version, experts):
    import sys

    from torch.torch_version import TorchVersion

    from qwen35_tune.models.quantize import quantize_moe_experts
    from qwen35_tune.train.model_setup import prepare_model

    # torch compares its own version with tuples: keep the type; transformers: the module as imported now
    monkeypatch.setattr(sys.modules[module_name], "__version__", TorchVersion(version) if experts else version)
    with pytest.raises(patches.UpstreamChanged, match=rf"^{module_name} {version} is outside"):
        patches.check_model_setup_names(quantized_experts=experts)
    if experts:  # the QLoRA MoE path refuses before it quantizes anything
        model = torch.nn.Module()
        model.experts = type("Experts", (torch.nn.Module,), {})()
        model.experts.gate_up_proj = torch.nn.Parameter(torch.zeros(2, 4, 2))
        model.experts.down_proj = torch.nn.Parameter(torch.zeros(2, 2, 2))
        with pytest.raises(UserError, match=rf"method.kind: qlora: torch {version} is outside.*install a version"):
            quantize_moe_experts(model)
    else:
        with pytest.raises(UserError, match=rf"transformers {version} is outside.*install transformers>="):
            prepare_model(None, type("M", (), {"config": type("C", (), {"model_type": "qwen3_5"})()})(), "unused")
