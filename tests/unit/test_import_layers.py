"""The package's imports form layers: no import cycle anywhere (function-level imports included), the data pipeline's
three layers point down only, no private name of the data or card modules is imported from another module, and the
data and card modules read no upstream private name (those go through ``qwen35_tune.patches``)."""

from __future__ import annotations

import ast
import functools
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "qwen35_tune"

# The data pipeline from the bottom up; a module may import from its own layer or the ones before it, never after,
# and every module of qwen35_tune/data has its place here.
DATA_LAYERS = [
    # rows: read, normalise and check rows, render and mask one row (text: reference and batched; with media)
    {"bad_row", "row_limits", "formats", "sources", "media_paths", "media", "hygiene", "row_progress",
     "fast_template", "render", "batch_render", "render_media", "messages",
     # stage formats: preference pairs (dpo) and verifiable prompts (grpo), normalised like the chat formats
     "preference", "verifiable",
     # plain-text documents: read from an offset, chunked, keyed for dedupe, filtered, prepared one by one
     "text_readers", "chunking", "bloom", "near_dedupe", "text_filters", "stream_docs"},
    # the cached batch maps over many rows (text, media)
    {"cached_render", "cached_media_render"},
    # cards: one card built (quarantine, mixing), previewed, packed
    {"build", "quarantine", "mixing", "preview", "packing", "pack_media",
     # streaming cards: the sources, the online packer and the resumable mixture built from them
     "stream_pack", "stream_sources", "streaming", "build_stream", "stream_report",
     # stage cards: preference pairs and GRPO prompts built through build_datasets
     "preference_build", "prompt_build"},
]


@functools.cache
def parsed(path: Path) -> ast.Module:
    """A file's syntax tree, parsed once for all the checks here."""
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name → file, for every module of the package under ``root`` (a package is its __init__)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_only(tree: ast.AST) -> set[ast.AST]:
    """Import nodes under ``if TYPE_CHECKING:`` (never run, so no cycle at import time)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(n for stmt in node.body for n in ast.walk(stmt))
    return skipped


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module → {imported module of the package: line of the first such import}, imports anywhere in the file."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        tree = parsed(path)
        skipped = _type_checking_only(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = graph.setdefault(name, {})
        for node in ast.walk(tree):
            if node in skipped:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1 packages
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                resolved = _resolve(target, modules)
                if resolved is not None and resolved != name:
                    edges.setdefault(resolved, node.lineno)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's components with more than one module (each holds at least one cycle), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def describe_cycle(component: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    """The component's modules and one shortest cycle through its first module, with file:line of each import."""
    start, members = component[0], set(component)
    parents: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:  # breadth first, so the first module found that imports ``start`` closes a shortest cycle
        node = queue.popleft()
        if start in graph[node]:
            break
        for child in sorted(graph[node]):
            if child in members and child not in parents:
                parents[child] = node
                queue.append(child)
    path: list[str] = []
    step: str | None = node
    while step is not None:
        path.append(step)
        step = parents[step]
    path.reverse()
    steps = [*path, start]
    lines = [f"  {a} -> {b}  ({_shown(modules[a])}:{graph[a][b]})" for a, b in zip(steps, steps[1:], strict=False)]
    return f"cycle among {', '.join(component)}:\n" + "\n".join(lines)


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


@functools.cache
def package_cycles() -> tuple[list[list[str]], dict, dict]:
    modules = module_names(PACKAGE)
    graph = import_graph(modules)
    return strongly_connected(graph), graph, modules


def test_no_import_cycle():
    cycles, graph, modules = package_cycles()
    report = "\n".join(describe_cycle(c, graph, modules) for c in cycles)
    assert not cycles, f"{len(cycles)} import cycle(s) in qwen35_tune:\n{report}"


def test_data_layers_point_down():
    _, graph, modules = package_cycles()
    rank = {f"qwen35_tune.data.{name}": i for i, layer in enumerate(DATA_LAYERS) for name in layer}
    unplaced = {m for m in modules if m.startswith("qwen35_tune.data.")} - set(rank)
    assert not unplaced, f"give these modules their layer in DATA_LAYERS: {sorted(unplaced)}"
    upward = [f"{module} (layer {rank[module]}) imports {target} (layer {rank[target]}) at "
              f"{modules[module].relative_to(REPO)}:{line}"
              for module in rank for target, line in graph[module].items() if rank.get(target, -1) > rank[module]]
    assert not upward, "\n".join(upward)


def test_cycle_finder_sees_function_level_and_relative_imports(tmp_path):
    """The detector itself: a cycle closed by an import inside a function, or by a relative import, is found, and an
    import under TYPE_CHECKING (never run) is not an edge."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.c import g\n")
    (pkg / "c.py").write_text("from . import a\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n")
    (pkg / "e.py").write_text("import pkg.d\n")
    modules = module_names(pkg)
    graph = import_graph(modules)
    assert strongly_connected(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    text = describe_cycle(["pkg.a", "pkg.b", "pkg.c"], graph, modules)
    assert "pkg.a -> pkg.b" in text and "pkg.b -> pkg.c" in text and "pkg.c -> pkg.a" in text
    assert f"{pkg / 'b.py'}:2" in text  # the line of the import inside the function


def _private_attribute(node: ast.AST) -> bool:
    """``node`` reads a private (not dunder) attribute: ``x._name``."""
    return isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")


def _private_imports(path: Path, own_module: str | None) -> list[str]:
    """``from qwen35_tune.data|cards... import _name`` (or from another test module) and ``module._name`` on such an
    imported module, in one file; inside the data and card modules also a private name from any other module of the
    package."""
    tree = parsed(path)
    watched = ("qwen35_tune.data", "qwen35_tune.cards", "tests.")
    inside = own_module is not None and own_module.startswith(watched)
    aliases: set[str] = set()
    found, attributes = [], []
    for node in ast.walk(tree):
        if _private_attribute(node):
            attributes.append(node)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module != own_module and (
                node.module.startswith(watched) or (inside and node.module.startswith("qwen35_tune"))):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: from {node.module} import {alias.name}")
                else:
                    aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            aliases.update(a.asname or a.name for a in node.names if a.name.startswith(watched))
    found += [f"{path.relative_to(REPO)}:{a.lineno}: {ast.unparse(a)}" for a in attributes
              if ast.unparse(a.value) in aliases]
    return found


def test_no_private_name_of_the_data_or_card_modules_or_the_tests_is_used_elsewhere():
    modules = {path: name for name, path in module_names(PACKAGE).items()}
    files = [*modules, *(p for folder in ("tests", "benchmarks", "scripts") for p in (REPO / folder).rglob("*.py"))]
    found = [hit for path in files for hit in _private_imports(path, modules.get(path))]
    assert not found, "private names used across modules (make them public or move them):\n" + "\n".join(found)


def _upstream_private_names(path: Path) -> list[str]:
    """Private names (``_x``) of other libraries a file imports or reads off an imported module, anywhere in it."""
    tree = parsed(path)
    modules: set[str] = set()
    found, attributes = [], []
    for node in ast.walk(tree):
        if _private_attribute(node):
            attributes.append(node)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level and \
                not node.module.startswith(("qwen35_tune", "__future__")):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: from {node.module} import {alias.name}")
                else:
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules.update(a.asname or a.name.partition(".")[0] for a in node.names if not a.name.startswith("qwen35"))
    found += [f"{path.relative_to(REPO)}:{a.lineno}: {ast.unparse(a)}" for a in attributes
              if ast.unparse(a.value).partition(".")[0] in modules]
    return found


def test_data_and_cards_read_no_upstream_private_name():
    files = [p for folder in ("data", "cards") for p in sorted((PACKAGE / folder).rglob("*.py"))]
    found = [hit for path in files for hit in _upstream_private_names(path)]
    assert not found, "read these through qwen35_tune.patches (version range, canary test):\n" + "\n".join(found)
