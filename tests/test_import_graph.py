"""The package's import graph has no cycle, counting the imports inside functions, and no import hides behind a string.

Every module under src/ditkit is parsed (never imported); an edge a -> b is any ``import`` or ``from ... import``
of module b anywhere in a (module level, functions, methods), relative or absolute. ``from . import x`` is an
edge to the submodule ``x`` when there is one, else to the package itself. A module reaching another through
``importlib`` or a ``"ditkit.module:function"`` string would hide an edge from this graph, so both are refused.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "ditkit"
# edges allowed to close a cycle (a lazy import behind a constructor, say); none is needed today
ALLOWED: set[tuple[str, str]] = set()
HIDDEN_REF = re.compile(rf"\b{PACKAGE}(\.\w+)+:\w+")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict) -> set[str]:
    """The modules of the package that ``node`` (in ``module``) imports."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        names = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]
    found = set()
    for name in names:
        while name and name not in modules:  # `import ditkit.a.b` binds ditkit.a.b; an attribute import its module
            name = name.rpartition(".")[0]
        if name.split(".")[0] == PACKAGE and name in modules:
            found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps |= _targets(node, module, is_package, modules)
        deps.discard(module)
        graph[module] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert "ditkit.compress.files" in graph["ditkit.pipelines.image"]  # `from ..compress.files import ...`
    assert "ditkit.budget" in graph["ditkit.pipelines.folder"]  # `from .. import budget`: the submodule
    assert "ditkit" not in graph["ditkit.pipelines.folder"]
    lazy = {m for m, deps in graph.items() if "ditkit.compress.prune_folder" in deps}
    assert "ditkit.cli.compress" in lazy  # imported inside cmd_prune only
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    graph = import_graph()
    for a, b in ALLOWED:
        graph[a].discard(b)
    assert cycles(graph) == []


def test_no_import_hidden_behind_a_string():
    for module, path in _modules().items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                assert name not in ("import_module", "__import__"), f"{module}:{node.lineno} imports by name"
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not HIDDEN_REF.search(node.value), f"{module}:{node.lineno} names a function in a string"
