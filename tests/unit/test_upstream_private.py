"""Canary for the upstream private names the chat-template fast path reads through ``qwen35_tune.patches``: they
exist and behave as relied on in the installed versions; outside the tested range or without them the error says
which, and the data build falls back to the public ``apply_chat_template`` (same ids and labels) with a warning."""

from __future__ import annotations

import importlib.util
import logging

import jinja2
import pytest
import transformers
from transformers.utils import chat_template_utils

from qwen35_tune import patches
from qwen35_tune.data import fast_template
from qwen35_tune.data.batch_render import render_batch
from qwen35_tune.data.formats import BadRow, normalise_row
from qwen35_tune.data.render import render_with_mask
from tests.unit.test_masks import ALT_TEMPLATE, FIXTURES


@pytest.fixture
def fresh_compiles():
    """Compiled templates are cached per process: start and leave the cache empty around a test that breaks them."""
    fast_template.compile_chat_template.cache_clear()
    yield
    fast_template.compile_chat_template.cache_clear()


def _remove_compiler(monkeypatch):
    monkeypatch.delattr(chat_template_utils, "_compile_jinja_template")


def _remove_pass_arg(monkeypatch):
    monkeypatch.delattr(jinja2.utils, "_PassArg")
    monkeypatch.delattr(jinja2.runtime, "_PassArg", raising=False)


def test_installed_versions_are_in_the_tested_ranges():
    from packaging.version import Version

    for module, (low, high) in ((transformers, patches.CHAT_TEMPLATE_COMPILER_VERSIONS),
                                (jinja2, patches.JINJA_PASS_ARG_VERSIONS)):  # fmt: skip
        assert Version(low) <= Version(module.__version__) < Version(high), (module.__name__, module.__version__)


def test_compiler_is_the_one_apply_chat_template_renders_with(tiny_tokenizer):
    """The compiled template renders apply_chat_template's text, in the immutable sandbox the fast path subclasses."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    template = patches.chat_template_compiler()(tiny_tokenizer.chat_template)
    assert isinstance(template.environment, ImmutableSandboxedEnvironment)
    assert callable(template.environment.globals["raise_exception"])
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello.", "reasoning_content": ""}]
    expected = tiny_tokenizer.apply_chat_template(messages, tokenize=False)
    assert template.render(messages=messages, add_generation_prompt=False, tools=None, documents=None,
                           **tiny_tokenizer.special_tokens_map) == expected  # fmt: skip


def test_pass_arg_reads_jinja2s_own_marks():
    """``from_obj`` is what tells the fast sandbox which globals jinja2 would call with extra arguments."""
    pass_arg = patches.jinja_pass_arg()

    class Marked:
        @jinja2.pass_environment
        def __call__(self, environment):
            return environment

    for marked in (jinja2.pass_context(lambda c: c), jinja2.pass_eval_context(lambda c: c),
                   jinja2.pass_environment(lambda e: e)):  # fmt: skip
        assert pass_arg.from_obj(marked) is not None
    assert pass_arg.from_obj(Marked().__call__) is not None
    assert pass_arg.from_obj(lambda x: x) is None and pass_arg.from_obj(str.upper) is None


@pytest.mark.parametrize("module,accessor,version", [(transformers, patches.chat_template_compiler, "6.0.1"),
                                                     (transformers, patches.chat_template_compiler, "5.1.0"),
                                                     (jinja2, patches.jinja_pass_arg, "4.0.0"),
                                                     (jinja2, patches.jinja_pass_arg, "2.11.3")])  # fmt: skip
def test_outside_the_tested_range_is_a_clear_error(monkeypatch, module, accessor, version):
    # The module object the accessor imports now: importing some transformers submodules (trainer_callback, via
    # bitsandbytes) replaces sys.modules["transformers"], so the one imported at the top of this file may be stale.
    module = importlib.import_module(module.__name__)
    monkeypatch.setattr(module, "__version__", version)
    with pytest.raises(patches.UpstreamChanged, match=rf"^{module.__name__} {version} is outside \d[\d.]*\.\.\d"):
        accessor()


def test_a_missing_name_is_a_clear_error(monkeypatch):
    _remove_compiler(monkeypatch)
    _remove_pass_arg(monkeypatch)
    with pytest.raises(patches.UpstreamChanged, match=r"has no transformers\.utils\.chat_template_utils\._compile"):
        patches.chat_template_compiler()
    with pytest.raises(patches.UpstreamChanged, match=r"has no jinja2\.utils\._PassArg"):
        patches.jinja_pass_arg()


def test_fast_template_imports_without_the_private_names(monkeypatch):
    """A missing private name must not break ``import`` of the data layer (every data build would fail)."""
    _remove_compiler(monkeypatch)
    _remove_pass_arg(monkeypatch)
    spec = importlib.util.spec_from_file_location("fast_template_copy", fast_template.__file__)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # a fresh copy: the imported module stays as is


def _same_as_reference(tokenizer, template):
    rows = [normalise_row(raw, "messages") for raw, _, _ in FIXTURES.values()]
    for row, got in zip(rows, render_batch(tokenizer, rows, template=template), strict=True):
        try:
            want = render_with_mask(tokenizer, row, template=template)
        except BadRow as exc:
            assert isinstance(got, BadRow) and str(got) == str(exc)
            continue
        assert not isinstance(got, BadRow), got
        assert (got.text, got.input_ids, got.labels) == (want.text, want.input_ids, want.labels)


@pytest.mark.parametrize("template", [None, ALT_TEMPLATE], ids=["qwen3_5", "chatml_alt"])
def test_without_the_compiler_rows_render_through_apply_chat_template(tiny_tokenizer, monkeypatch, caplog,
                                                                      fresh_compiles, template):
    _remove_compiler(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="qwen35_tune.data.fast_template"):
        _same_as_reference(tiny_tokenizer, template)
    assert fast_template.compile_chat_template(tiny_tokenizer.chat_template) is None
    assert "_compile_jinja_template; chat templates are rendered through tokenizer.apply_chat_template" in caplog.text


def test_without_pass_arg_globals_go_through_jinja2s_checks(tiny_tokenizer, monkeypatch, caplog, fresh_compiles):
    _remove_pass_arg(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="qwen35_tune.data.fast_template"):
        compiled = fast_template.compile_chat_template(tiny_tokenizer.chat_template)
        _same_as_reference(tiny_tokenizer, None)
    assert isinstance(compiled.environment, fast_template.FastSandbox) and compiled.environment.plain_globals == set()
    assert "has no jinja2.utils._PassArg; chat templates call their globals through jinja2's checks" in caplog.text
