"""fla's Triton causal convolution bound in causal-conv1d's place: argument translation, selection, upstream canary.

fla's kernels need a GPU, so ``reference_fla_causal_conv1d`` stands in for ``fla.modules.conv.causal_conv1d``: a torch
statement of what it computes (x [B, T, D], weight [D, W], each sequence of ``cu_seqlens`` convolved causally from a
zero state, then the activation). It matched fla 0.6.0's real Triton kernels to ~1e-6 (outputs and gradients, with
and without cu_seqlens / bias / silu) under ``TRITON_INTERPRET=1``; the GPU check compares fla itself on CUDA.
"""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch
import torch.nn.functional as F

from qwen35_tune import patches

MODULES = [name for name, _ in patches._GDN_CLASSES]
LENGTHS = [5, 70, 2, 23]


def reference_fla_causal_conv1d(x, weight=None, bias=None, activation=None, cu_seqlens=None, **_):
    """fla's ``causal_conv1d`` semantics in torch: returns (y [B, T, D], None)."""
    total, width = x.shape[1], weight.shape[1]
    cuts = [0, total] if cu_seqlens is None else [int(c) for c in cu_seqlens.tolist()]
    parts = []
    for start, end in zip(cuts[:-1], cuts[1:], strict=False):
        segment = F.pad(x[:, start:end].transpose(1, 2), (width - 1, 0))
        parts.append(F.conv1d(segment, weight.unsqueeze(1), bias, groups=weight.shape[0]).transpose(1, 2))
    y = torch.cat(parts, dim=1)
    return (F.silu(y) if activation in ("silu", "swish") else y), None


def _torch_conv():
    """transformers' own torch convolution (the fallback it runs without causal-conv1d), unwrapped."""
    return inspect.unwrap(importlib.import_module(patches.DENSE_MODELING).causal_conv1d_fn)


def _per_segment_torch(x, weight, bias, activation, lengths):
    cuts = [0, *torch.tensor(lengths).cumsum(0).tolist()]
    conv = _torch_conv()
    parts = [conv(x[:, :, a:b], weight, bias, activation=activation) for a, b in zip(cuts, cuts[1:], strict=False)]
    return torch.cat(parts, dim=2)


def _packed_inputs(dim=12, width=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, dim, sum(LENGTHS), generator=g)
    weight, bias = torch.randn(dim, width, generator=g), torch.randn(dim, generator=g)
    cu = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
    seq_idx = torch.repeat_interleave(torch.arange(len(LENGTHS), dtype=torch.int32), torch.tensor(LENGTHS))[None]
    return x, weight, bias, cu, seq_idx


@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_adapter_equals_transformers_torch_conv_per_packed_sample(activation, with_bias):
    x, weight, bias, cu, seq_idx = _packed_inputs()
    bias = bias if with_bias else None
    adapter = patches.fla_conv_adapter(reference_fla_causal_conv1d)
    expected = _per_segment_torch(x, weight, bias, activation, LENGTHS)
    by_cu = adapter(x, weight, bias, activation=activation, cu_seq_lens_q=cu, seq_idx=seq_idx, position_ids=None)
    by_seq_idx = adapter(x, weight, bias, activation=activation, seq_idx=seq_idx)
    assert by_cu.shape == x.shape
    torch.testing.assert_close(by_cu, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(by_seq_idx, expected, rtol=1e-5, atol=1e-5)
    # and the boundaries matter: the whole row convolved at once differs from the per-sample result
    assert not torch.allclose(adapter(x, weight, bias, activation=activation), expected, atol=1e-3)


def test_adapter_without_boundaries_equals_torch_conv_on_a_batch_and_keeps_dtypes():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 8, 17, generator=g).to(torch.bfloat16)
    weight = torch.randn(8, 4, generator=g)  # fp32 weight under bf16 activations: computed in fp32, returned bf16
    got = patches.fla_conv_adapter(reference_fla_causal_conv1d)(x, weight, None, activation="silu")
    want = _torch_conv()(x, weight, None, activation="silu")
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got, want)


def test_adapter_refuses_what_fla_cannot_do():
    x, weight, _, cu, _ = _packed_inputs()
    adapter = patches.fla_conv_adapter(reference_fla_causal_conv1d)
    with pytest.raises(ValueError, match="one row"):
        adapter(x.expand(2, -1, -1), weight, None, activation="silu", cu_seq_lens_q=cu)
    with pytest.raises(ValueError, match="activations"):
        adapter(x, weight, None, activation="gelu")


def test_cu_seqlens_from_seq_idx():
    seq_idx = torch.tensor([[0, 0, 1, 2, 2, 2]])
    assert patches.cu_seqlens_from_seq_idx(seq_idx).tolist() == [0, 2, 3, 6]
    assert patches.cu_seqlens_from_seq_idx(torch.zeros(1, 4, dtype=torch.int32)).tolist() == [0, 4]


@pytest.fixture
def unbound():
    """No fla binding before or after the test (the process-wide modeling modules are shared)."""
    patches.remove_fla_causal_conv1d()
    yield
    patches.remove_fla_causal_conv1d()


def test_apply_binds_both_modeling_modules_and_remove_restores(unbound):
    originals = [importlib.import_module(m).causal_conv1d_fn for m in MODULES]
    assert not any(patches.kernel_bound(f) for f in originals)  # CPU, no causal-conv1d: transformers' torch conv
    assert patches.apply_fla_causal_conv1d(reference_fla_causal_conv1d)
    for module_name, original in zip(MODULES, originals, strict=True):
        bound = importlib.import_module(module_name).causal_conv1d_fn
        assert bound._qwen35_tune_binding == "fla-triton" and bound._qwen35_tune_original is original
        assert patches.kernel_bound(bound)
    assert patches.apply_fla_causal_conv1d(reference_fla_causal_conv1d)  # idempotent
    patches.remove_fla_causal_conv1d()
    assert [importlib.import_module(m).causal_conv1d_fn for m in MODULES] == originals


@pytest.mark.parametrize("version", [None, "0.4.1", "0.4.2"])
def test_apply_binds_nothing_without_a_grouped_value_fla(unbound, monkeypatch, version):
    monkeypatch.setattr(patches, "installed_version", lambda module: version)
    assert not patches.apply_fla_causal_conv1d()
    assert not any(hasattr(importlib.import_module(m).causal_conv1d_fn, "_qwen35_tune_original") for m in MODULES)


def test_apply_steps_aside_when_causal_conv1d_is_bound(unbound, monkeypatch):
    def causal_conv1d_kernel(*args, **kwargs):  # what transformers binds when causal-conv1d is installed
        raise AssertionError("not called")

    causal_conv1d_kernel._qwen35_tune_binding = "causal-conv1d (test)"
    for name in MODULES:
        monkeypatch.setattr(importlib.import_module(name), "causal_conv1d_fn", causal_conv1d_kernel)
    assert not patches.apply_fla_causal_conv1d(reference_fla_causal_conv1d)
    assert importlib.import_module(MODULES[0]).causal_conv1d_fn is causal_conv1d_kernel


def test_kernel_bound_reads_transformers_wrapper_flag():
    def make(flag):
        is_new_implementation = flag

        def wrapped(*args, **kwargs):
            return is_new_implementation

        return wrapped

    assert patches.kernel_bound(make(True)) and not patches.kernel_bound(make(False))
    assert not patches.kernel_bound(lambda x: x)  # unknown: taken as the torch path


def test_kernel_flag_canary_transformers_wrapper_keeps_its_choice_there():
    """Canary for the private flag ``kernel_bound`` reads: transformers' own wrapper, not a stand-in, keeps whether it
    bound a package function in ``is_new_implementation``; fails if upstream renames or drops it."""
    from transformers.integrations.hub_kernels import use_kernel_func_from_hub_with_fallback

    def torch_path(x):
        return x

    fallback = use_kernel_func_from_hub_with_fallback("sqrt", "qwen35_tune_no_such_kernel_package")(torch_path)
    bound = use_kernel_func_from_hub_with_fallback("sqrt", "math")(torch_path)  # a package that has the function
    assert patches.kernel_flag(fallback) is False and not patches.kernel_bound(fallback)
    assert patches.kernel_flag(bound) is True and patches.kernel_bound(bound)
    assert bound(4.0) == 2.0  # the flag is what the wrapper acts on


@pytest.mark.parametrize("module_name", MODULES)
def test_kernel_flag_canary_qwen35_slots_go_through_the_wrapper(unbound, module_name):
    """Both Gated DeltaNet slots carry the wrapper's flag (None: the doctor could not tell kernel from torch)."""
    module = importlib.import_module(module_name)
    assert patches.kernel_flag(module.torch_chunk_gated_delta_rule) is not None
    assert patches.kernel_flag(module.causal_conv1d_fn) is not None


def test_kernel_flag_outside_the_read_versions_is_a_clear_error(unbound, monkeypatch):
    import transformers

    from qwen35_tune.doctor import check_kernels
    from qwen35_tune.errors import UserError

    low, high = patches.KERNEL_FLAG_VERSIONS
    module = importlib.import_module(MODULES[0])
    monkeypatch.setattr(transformers, "__version__", "5.19.0")
    with pytest.raises(patches.UpstreamChanged, match=rf"5.19.0 is outside {low}..{high}"):
        patches.kernel_bound(module.torch_chunk_gated_delta_rule)
    assert patches.kernel_bound(patches.fla_conv_adapter(reference_fla_causal_conv1d))  # ours: known without the flag
    with pytest.raises(UserError, match=rf"kernels: .*install transformers>={low},<{high}"):
        check_kernels("qwen3_5", None, allow_slow=False, on_cuda=False)


@pytest.mark.parametrize("module_name", MODULES)
def test_upstream_still_calls_the_convolution_the_way_the_adapter_expects(module_name):
    """Canary: if this fails, re-read transformers' GDN forward before trusting the fla convolution binding."""
    module = importlib.import_module(module_name)
    conv = inspect.unwrap(getattr(module.causal_conv1d_fn, "_qwen35_tune_original", module.causal_conv1d_fn))
    assert list(inspect.signature(conv).parameters) == ["hidden_states", "weight", "bias", "activation", "kwargs"]
    cls = getattr(module, dict(patches._GDN_CLASSES)[module_name])
    forward = inspect.getsource(inspect.unwrap(getattr(cls.forward, "_qwen35_tune_original", cls.forward)))
    call = forward.index("mixed_qkv = causal_conv1d_fn(")
    arguments = forward[call:forward.index("\n", forward.index("**kwargs", call))]
    assert forward.index("mixed_qkv = mixed_qkv.transpose(1, 2)") < call  # channels first, as causal-conv1d takes
    assert "self.conv1d.weight.squeeze(1)" in arguments  # weight [D, W]
    assert "activation=self.activation" in arguments and arguments.count("\n") <= 6  # one call, kwargs passed on
    assert call < forward.index('kwargs.pop("cu_seq_lens_q"')  # the boundaries still reach the convolution
