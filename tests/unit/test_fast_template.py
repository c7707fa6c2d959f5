"""The fast sandbox renders exactly what transformers' sandbox renders, and still refuses what the sandbox refuses."""

from __future__ import annotations

import pytest
from jinja2.exceptions import SecurityError

from qwen35_tune.data.fast_template import compile_chat_template
from qwen35_tune.patches import chat_template_compiler

CONVERSATIONS = [
    [{"role": "user", "content": "Hi  there"}, {"role": "assistant", "content": "<think>\nx\n</think>\n\nHello."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sum 2+2"},
     {"role": "assistant", "content": "4", "reasoning_content": "2+2=4"}, {"role": "user", "content": "And 3+3?"}],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("generation", [True, False])
def test_same_text_as_apply_chat_template(tiny_tokenizer, messages, generation):
    expected = tiny_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    compiled = compile_chat_template(tiny_tokenizer.chat_template)
    got = compiled.render(messages=messages, add_generation_prompt=generation, tools=None, documents=None,
                          **tiny_tokenizer.special_tokens_map)
    assert got == expected


def _outcome(template, **variables) -> str:
    try:
        return "ok:" + template.render(**variables)
    except Exception as exc:  # the exception type is part of the behaviour compared
        return f"{type(exc).__name__}"


@pytest.mark.parametrize("source", [
    "{{ messages.__class__.__mro__ }}",          # private attributes stay hidden
    "{{ messages[0].clear() }}",                 # the immutable sandbox refuses mutation
    "{{ messages.append(1) }}",
    "{{ messages[0].keys.__self__ }}",
    "{{ 'a{0.__class__}'.format(messages) }}",   # str.format still goes through the safe formatter
    "{{ messages[0].content.__class__ }}",
    "{{ (messages[0].content.split)('x') }}",
    "{% for m in messages %}{{ loop.__class__ }}{% endfor %}",   # loop and namespace attributes read directly...
    "{% for m in messages %}{{ loop._after }}{% endfor %}",
    "{% set ns = namespace(a=1) %}{{ ns._Namespace__attrs }}",  # ...but not their private ones
    "{% set ns = namespace(a=1) %}{{ ns.__class__ }}",
    "{{ namespace.__init__ }}",
])
def test_refuses_and_hides_what_the_reference_sandbox_does(source):
    variables = {"messages": [{"role": "user", "content": "axb"}]}
    got = _outcome(compile_chat_template(source), **variables)
    assert got == _outcome(chat_template_compiler()(source), **variables)
    assert "class" not in got and "builtin" not in got


def test_mutation_is_an_error():
    with pytest.raises(SecurityError):
        compile_chat_template("{{ messages.append(1) }}").render(messages=[])
    with pytest.raises(SecurityError):
        compile_chat_template("{{ messages.__class__.__mro__ }}").render(messages=[])


def test_dict_keys_and_methods_resolve_like_jinja(tiny_tokenizer):
    template = compile_chat_template("{{ m.role }}|{{ m.missing is defined }}|{{ m.items() | list | length }}")
    assert template.render(m={"role": "user", "items": "shadowed"}) == "user|False|2"


@pytest.mark.parametrize("source", [
    "{% for m in messages %}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}"
    "{{ loop.nope is defined }}{% endfor %}",
    "{% set ns = namespace(a=1) %}{% set ns.a = ns.a + 1 %}{{ ns.a }}|{{ ns.b is defined }}",
    "{{ messages[0].content.upper() }}|{{ messages[0].content.nope is defined }}|{{ 'x{}'.format(2) }}",
    "{{ raise_exception('refused: ' ~ messages|length) }}",
    "{{ range(3)|list }}|{{ dict(a=1).a }}",
])
def test_directly_read_attributes_and_called_globals_match_the_sandbox(source):
    variables = {"messages": [{"role": "user", "content": "axb"}, {"role": "assistant", "content": "c"}]}
    expected = _outcome(chat_template_compiler()(source), **variables)
    assert _outcome(compile_chat_template(source), **variables) == expected
