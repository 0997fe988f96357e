"""The shapes demo stays apart from the engine: no engine module (models, diffusion, accel, compress,
pipelines, interop) imports ditkit.shapes, at the top of a file or inside a function."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ENGINE = ("models", "diffusion", "accel", "compress", "pipelines", "interop")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The ditkit modules a file imports anywhere in it (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            candidates = [target, *(f"{target}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found |= {c for c in candidates if c in modules and c != name}
    return found


def test_no_engine_module_imports_the_shapes_package():
    files = {_module_name(p): p for p in (SRC / "ditkit").rglob("*.py")}
    assert "ditkit.shapes.data" in files  # the walk sees the package
    offenders = {}
    for name, path in files.items():
        if name.split(".")[1:2] and name.split(".")[1] in ENGINE:
            reached = sorted(m for m in _imports(path, set(files)) if m == "ditkit.shapes" or m.startswith("ditkit.shapes."))
            if reached:
                offenders[name] = reached
    assert offenders == {}
