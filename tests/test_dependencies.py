"""Every third-party module a distribution imports is declared by that distribution (as a
dependency or in one of its extras), so an install from an index never misses a package that a
checkout happened to have."""

import ast
import importlib.metadata as md
import pathlib
import re
import sys

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = pathlib.Path(__file__).resolve().parents[1]
DISTRIBUTIONS = {  # pyproject folder → package folder
    ".": "fimaudit",
    "adapters/torch": "adapters/torch/fimaudit_torch",
    "adapters/tensorflow": "adapters/tensorflow/fimaudit_tensorflow",
    "adapters/onnx": "adapters/onnx/fimaudit_onnx",
    "adapters/http": "adapters/http/fimaudit_http",
}
# imports the core makes only for an object of that framework, which is then already imported
NOT_DECLARED = {"fimaudit": {"torch", "cupy", "jax"}}
# packages a distribution needs at run time without importing them itself
USED_INDIRECTLY = {"adapters/torch": {"onnxscript"}}  # torch.onnx.export(dynamo=True) falls back without it


def _imports(folder):
    found = set()
    for file in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and not m.startswith("fimaudit")}


def _declared(project):
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    names = {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}
    return names | {project["name"]}


@pytest.mark.parametrize("folder", sorted(DISTRIBUTIONS))
def test_every_import_is_declared(folder):
    project = tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]
    declared = _declared(project)
    owners = md.packages_distributions()
    missing = []
    used = _imports(DISTRIBUTIONS[folder]) | USED_INDIRECTLY.get(folder, set())
    for module in sorted(used - NOT_DECLARED.get(project["name"], set())):
        dists = {d.lower().replace("_", "-") for d in owners.get(module, [module])}
        if not dists & declared:
            missing.append(f"{module} (distribution {', '.join(sorted(dists))})")
    assert not missing, f"{project['name']} imports undeclared packages: {missing}"


def test_plugins_require_a_compatible_core():
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    major, minor = (int(v) for v in core["version"].split(".")[:2])
    for folder in DISTRIBUTIONS:
        if folder == ".":
            continue
        deps = tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]["dependencies"]
        spec = next(d for d in deps if re.match(r"fimaudit\b(?!-)", d))
        assert f">={major}.{minor}" in spec and f"<{major}.{minor + 1}" in spec, (folder, spec)
