"""Composing and building YAML within bounds: the limits that keep a hostile or mistaken recipe or data card (alias
bombs, recursive aliases, 20k-deep nesting, huge mappings) from hanging or crashing the loader, and the tree builder
that turns composed nodes into plain data with the line of every key path. yaml_lines.py puts them to use."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from qwen35_tune.errors import Problem

KeyPath = tuple[Any, ...]  # ("data", "cards", 0, "path"): str keys for mappings, int indexes for lists


def dotted(path: KeyPath) -> str:
    """Key path in the user's words: ("data", "cards", 0, "weight") -> data.cards[0].weight."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# A recipe or data card is a page of settings. These bounds are far above any real one and stop a hostile or
# mistaken file (an alias bomb, 20k-deep nesting, a data file passed as a card) in milliseconds with its line;
# each message says it is a limit for recipes and data cards.
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32  # nested mappings/lists, aliases expanded
MAX_VALUES = 100_000  # keys, items and scalars, aliases expanded
MAX_KEYS = 1_000  # in one mapping
LIMIT_NOTE = " (the limit for a recipe or data card)"


class YamlLimitError(yaml.MarkedYAMLError):
    """A document past one of the bounds above (not a syntax error: the message is shown as it is)."""

    def __init__(self, message: str, mark: Any):
        super().__init__(problem=message, problem_mark=mark)


class BoundedComposer:
    """Composer mixin (before yaml.SafeLoader in the bases): PyYAML's compose_node recurses without bound, so the
    limits are checked before each step down, and an alias inside its own anchor (`&a [*a]`) is refused."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth, self._nodes, self._open_anchors = 0, 0, set()

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        """PyYAML's compose_node with the limits checked first."""
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            if event.anchor in self._open_anchors:
                raise YamlLimitError(f"alias *{event.anchor} is inside the anchor &{event.anchor} it refers to "
                                     "(a structure that contains itself)", event.start_mark)  # fmt: skip
            return super().compose_node(parent, index)
        self._depth += 1
        self._nodes += 1
        if self._depth > MAX_DEPTH:
            raise YamlLimitError(f"nested deeper than {MAX_DEPTH} levels{LIMIT_NOTE}", event.start_mark)
        if self._nodes > MAX_VALUES:
            raise YamlLimitError(f"more than {MAX_VALUES:,} values{LIMIT_NOTE}", event.start_mark)
        anchor = event.anchor
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open_anchors.discard(anchor)


_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "binary", "timestamp")}
_COLLECTION_TAGS = {MappingNode: "tag:yaml.org,2002:map", SequenceNode: "tag:yaml.org,2002:seq"}
Pair = tuple[Node, Node, bool]  # key node, value node, written in this mapping (False: merged in by `<<`)


def _unsupported(node: Node) -> str:
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    return f"the tag {tag} is not supported in a recipe or data card"


class TreeBuilder:
    """Walks composed YAML nodes into dicts/lists/scalars, noting each key's line and duplicate keys.

    A node that aliases reuse is one object in the composed graph; `measure` visits each once (memoised) to bound
    what the aliases expand to before `build` expands them, so an alias bomb costs a walk of its text, not of its
    expansion. Merge keys are expanded here too, once per mapping and deduplicated (PyYAML's flatten_mapping copies
    every merged pair again for each alias, which grows exponentially through chained merges).
    """

    def __init__(self, loader: yaml.SafeLoader, file: str):
        self.loader, self.file = loader, file
        self.lines: dict[KeyPath, int] = {}
        self.problems: list[Problem] = []
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, levels below) with aliases expanded
        self._pairs: dict[int, list[Pair]] = {}
        self._open: set[int] = set()

    def measure(self, node: Node, depth: int) -> tuple[int, int]:
        """(values, levels) node expands to; a YamlLimitError at the node that passes MAX_VALUES or MAX_DEPTH."""
        too_deep = f"nested deeper than {MAX_DEPTH} levels with aliases expanded{LIMIT_NOTE}"
        if depth > MAX_DEPTH:
            raise YamlLimitError(too_deep, node.start_mark)
        known = self._sizes.get(id(node))
        if known is None:
            if id(node) in self._open:  # the composer refuses this already; kept so build can never loop
                raise YamlLimitError("an alias refers to the structure it is in", node.start_mark)
            self._open.add(id(node))
            values, levels = 1, 0
            for child in self._children(node):
                child_values, child_levels = self.measure(child, depth + 1)
                values, levels = values + child_values, max(levels, child_levels + 1)
                if values > MAX_VALUES:
                    raise YamlLimitError(
                        f"expands to more than {MAX_VALUES:,} values through aliases{LIMIT_NOTE}", node.start_mark
                    )
            self._open.discard(id(node))
            known = self._sizes[id(node)] = (values, levels)
        if depth + known[1] > MAX_DEPTH:
            raise YamlLimitError(too_deep, node.start_mark)
        return known

    def _children(self, node: Node) -> list[Node]:
        if isinstance(node, MappingNode):
            return [n for key, value, _ in self.pairs(node) for n in (key, value)]
        return list(node.value) if isinstance(node, SequenceNode) else []

    def pairs(self, node: MappingNode, chain: int = 0) -> list[Pair]:
        """The mapping's pairs with `<<` merges applied as PyYAML does (own keys last, so they win; of several
        merged mappings the first listed wins), one pair per merged-in key."""
        known = self._pairs.get(id(node))
        if known is not None:
            return known
        if chain > MAX_DEPTH:
            raise YamlLimitError(f"merge keys (<<) chained more than {MAX_DEPTH} deep{LIMIT_NOTE}", node.start_mark)
        merged: dict[Any, Pair] = {}
        own: list[Pair] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                own.append((key_node, value_node, True))
                continue
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in reversed(sources):
                if not isinstance(source, MappingNode):
                    raise ConstructorError(
                        None, None, "a merge key (<<) takes a mapping or a list of mappings", source.start_mark
                    )
                for key, value, _ in self.pairs(source, chain + 1):
                    name = key.value if isinstance(key, ScalarNode) else id(key)
                    merged.pop(name, None)  # the later one wins; it also moves to the later position
                    merged[name] = (key, value, False)
        found = [*merged.values(), *own]
        if len({k.value if isinstance(k, ScalarNode) else id(k) for k, _, _ in found}) > MAX_KEYS:
            raise YamlLimitError(f"a mapping with more than {MAX_KEYS:,} keys{LIMIT_NOTE}", node.start_mark)
        self._pairs[id(node)] = found
        return found

    def build(self, node: Node, path: KeyPath) -> Any:
        """Plain Python value of node; scalars go through the loader's own constructors. Only the plain YAML tags:
        a mapping tagged `!!python/object` (or `!!set`) would otherwise be read as a plain mapping, silently."""
        if type(node) in _COLLECTION_TAGS and node.tag != _COLLECTION_TAGS[type(node)]:
            raise ConstructorError(None, None, _unsupported(node), node.start_mark)
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                items.append(self.build(item, (*path, index)))
            return items
        if not isinstance(node, ScalarNode) or node.tag not in _PLAIN_TAGS:
            raise ConstructorError(None, None, _unsupported(node), node.start_mark)
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, OverflowError) as exc:  # e.g. an integer of more than 4300 digits
            raise YamlLimitError(f"cannot read this value ({str(exc).split(';')[0]})", node.start_mark) from None

    def _mapping(self, node: MappingNode, path: KeyPath) -> dict[str, Any]:
        """Mapping with `<<` merge keys applied; a key written twice in one mapping is a problem, not a silent win."""
        out: dict[str, Any] = {}
        own_keys: set[str] = set()
        for key_node, value_node, own in self.pairs(node):
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                self.problems.append(Problem(self.file, line, dotted(path), "a key must be a plain name"))
                continue
            key = (*path, key_node.value)  # the key as written, so `on:` or `1:` stay strings
            if own:  # a merged-in key may be overridden; the same key written twice may not
                if key_node.value in own_keys:
                    self.problems.append(
                        Problem(self.file, line, dotted(key), f"duplicate key (also on line {self.lines[key]})")
                    )
                own_keys.add(key_node.value)
            self.lines[key] = line
            out[key_node.value] = self.build(value_node, key)
        return out
