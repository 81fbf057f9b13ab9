"""The core's shape: small modules, and no two parts of the package that import each other."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "fimaudit"
MAX_LINES = 250


def _modules():
    for file in sorted(ROOT.rglob("*.py")):
        parts = list(file.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), file


def _imports(name, file):
    """Modules of the package that ``file`` imports (at any depth: a function-level import counts)."""
    package = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            yield target
            yield from (f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def _part(name):
    """fimaudit.blackbox.step → fimaudit.blackbox; fimaudit.models → fimaudit.models."""
    return ".".join(name.split(".")[:2])


def test_no_module_is_longer_than_the_limit():
    long = {
        str(f.relative_to(ROOT.parent)): n for _, f in _modules() if (n := len(f.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_no_two_parts_of_the_package_import_each_other():
    names = dict(_modules())
    edges = {}
    for name, file in names.items():
        for target in _imports(name, file):
            if target in names and _part(target) != _part(name) and _part(name) != "fimaudit":
                edges.setdefault(_part(name), set()).add(_part(target))
    cycles = sorted((a, b) for a in edges for b in edges[a] if a < b and a in edges.get(b, ()))
    assert not cycles, cycles
