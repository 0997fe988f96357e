"""The shapes demo stays apart from the engine: no engine module (models, diffusion, accel, compress,
pipelines, interop) imports ditkit.shapes, at the top of a file or inside a function; nor anything else
of the layers above it (train, cli, eval, data), except the generic image metrics of ditkit.eval.metrics."""

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


# the layers above the engine; the engine's benchmarks report the generic image metrics of eval.metrics
UPPER = ("train", "cli", "eval", "shapes", "data")
GENERIC = {"ditkit.eval.metrics"}


def test_the_engine_imports_nothing_from_the_layers_above_it():
    files = {_module_name(p): p for p in (SRC / "ditkit").rglob("*.py")}

    def upper(module: str) -> bool:
        return module.split(".")[1:2] != [] and module.split(".")[1] in UPPER

    offenders = {}
    for name, path in files.items():
        if name.split(".")[1:2] and name.split(".")[1] in (*ENGINE, "io", "config"):
            reached = sorted(m for m in _imports(path, set(files)) if upper(m) and m not in GENERIC)
            if reached:
                offenders[name] = reached
    assert offenders == {}
    for name in GENERIC:  # and the generic metrics import nothing of those layers themselves
        assert not any(upper(m) for m in _imports(files[name], set(files))), name
