"""Chat templates compiled into a sandbox that answers the same questions faster.

Why by hand: transformers renders chat templates in jinja2's ``ImmutableSandboxedEnvironment`` (templates come
from the Hub and must not reach Python internals). On large cards a third of the render time is the sandbox's own
bookkeeping: every ``message.content`` first fails as a Python attribute (an exception) before the dict lookup,
and every attribute is re-checked for safety. ``FastSandbox`` keeps the sandbox and its answers and only
shortcuts them:
- on a plain ``dict``, a name that is not a dict method can only be a key (dicts have no instance attributes), so
  it is looked up as a key directly: the same value, or the same undefined, as the slow path;
- whether an attribute is safe depends only on the object's type and the attribute's name (jinja2's
  ``is_internal_attribute`` and ``modifies_known_mutable`` test nothing else), so the answer is remembered per
  (type, name);
- a bound method of a ``str`` (``content.split``, ``.strip`` ...), a macro the template defines, or a global that
  carries none of jinja2's markers (transformers' ``namespace``, ``raise_exception`` ...) is called directly:
  jinja2 would check it for ``unsafe_callable`` / ``alters_data`` markers and context-passing markers, which none
  of them carries (``str.format`` never gets here: the sandbox's getattr already swapped it for its safe
  formatter);
- a public ``str`` method other than ``format``/``format_map``, and a public attribute of a loop (``loop.index0``)
  or of a ``namespace()``, is read with plain ``getattr``: the sandbox would read it the same way and then find it
  safe (none of these types is a function, method, type, code, frame or generator, and the name has no ``_``), so
  only an attribute that does not exist takes the sandbox's own path.
Tests render every mask fixture and template with both and compare the text exactly.

The two upstream private names this needs (transformers' template compiler, jinja2's pass-argument marks) are read
through ``qwen35_tune.patches``; when one is gone or untested, ``compile_chat_template`` returns None (with a
warning) and the caller renders through the public ``apply_chat_template`` instead.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from types import BuiltinMethodType
from typing import Any

from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from qwen35_tune.patches import UpstreamChanged, chat_template_compiler, jinja_pass_arg

log = logging.getLogger(__name__)

_DICT_ATTRIBUTES = frozenset(dir(dict))
_STR_METHODS = frozenset(name for name in dir(str) if not name.startswith("_")) - {"format", "format_map"}
_SAFE: dict[tuple[type, str], bool] = {}


class FastSandbox(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox, with the two shortcuts described in the module docstring."""

    plain_globals: frozenset[int] = frozenset()  # ids of the globals that may be called directly

    def getattr(self, obj: Any, attribute: str) -> Any:
        kind = type(obj)
        if kind is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        if kind is str and attribute in _STR_METHODS:
            return getattr(obj, attribute)
        if (kind is LoopContext or _is_namespace(kind)) and not attribute.startswith("_"):
            try:
                return getattr(obj, attribute)
            except AttributeError:
                pass
        return super().getattr(obj, attribute)

    def call(__self, __context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (jinja2's signature)
        kind = type(__obj)
        if (kind is Macro or (kind is BuiltinMethodType and type(__obj.__self__) is str)
                or id(__obj) in __self.plain_globals):
            kwargs.pop("_block_vars", None)  # jinja2 passes these for context-taking callables only
            kwargs.pop("_loop_vars", None)
            try:
                return __obj(*args, **kwargs)
            except StopIteration:  # what jinja2's Context.call turns it into
                return __self.undefined("value was undefined because a callable raised a StopIteration exception")
        return super().call(__context, __obj, *args, **kwargs)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        key = (type(obj), attr)
        safe = _SAFE.get(key)
        if safe is None:
            safe = _SAFE[key] = super().is_safe_attribute(obj, attr, value)
        return safe


def _is_namespace(kind: type) -> bool:
    return issubclass(kind, Namespace) and kind.__getattribute__ is Namespace.__getattribute__


def _plain_callable(environment: FastSandbox, value: Any, pass_arg) -> bool:
    """True when jinja2's sandbox would call ``value`` as it is: safe, and no context/environment argument."""
    if not callable(value) or not environment.is_safe_callable(value):
        return False
    call = value.__call__  # what jinja2 calls instead when it carries a marker
    return pass_arg.from_obj(value) is None and pass_arg.from_obj(call) is None


def _plain_globals(environment: FastSandbox) -> frozenset[int]:
    """Ids of the globals that may be called directly; none (all go through jinja2's own call) without ``_PassArg``."""
    try:
        pass_arg = jinja_pass_arg()
    except UpstreamChanged as exc:
        log.warning("%s; chat templates call their globals through jinja2's checks (same text, a little slower)", exc)
        return frozenset()
    # the environment keeps these objects alive, so their ids stay theirs
    return frozenset(id(value) for value in environment.globals.values()
                     if _plain_callable(environment, value, pass_arg))


@lru_cache(maxsize=16)  # compiling costs tens of ms; datasets.map calls the renderer once per batch
def compile_chat_template(text: str):
    """``text`` compiled exactly as transformers compiles chat templates (same extensions, filters, globals), in a
    FastSandbox; None when transformers' compiler cannot be read (render with ``apply_chat_template`` then)."""
    try:
        compile_reference = chat_template_compiler()
    except UpstreamChanged as exc:
        log.warning("%s; chat templates are rendered through tokenizer.apply_chat_template instead (same text, "
                    "slower)", exc)
        return None
    reference = compile_reference(text)
    environment = reference.environment.overlay()  # a copy: transformers' cached environment is left untouched
    if not isinstance(environment, ImmutableSandboxedEnvironment):  # transformers changed how it sandboxes
        return reference
    environment.__class__ = FastSandbox
    environment.plain_globals = _plain_globals(environment)
    template = environment.from_string(text)
    # jinja2 keeps a template's globals as a ChainMap over the environment's and copies it into a dict on every
    # render (a tenth of the render time); this environment is private and never changes, so copy it once here.
    template.globals = dict(template.globals)
    return template
