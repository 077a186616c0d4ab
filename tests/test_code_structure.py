"""The package's shape, checked: no import cycle, no import inside a function except the optional
toolchains, no function longer than 80 lines, and the low modules import nothing above them."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vitedge"
# optional heavy toolchains (extras, NVIDIA's index, macOS): imported where they are used
LAZY_OK = ("tensorrt", "coremltools", "executorch", "ai_edge_litert", "litert_torch", "ai_edge_quantizer", "torchao",
           "h5py")
MAX_FUNCTION_LINES = 80
# module -> vitedge modules it may import (the bottom of the layer map in README "Layout")
LOW_MODULES = {"vitedge.io": set(), "vitedge.torch_io": {"vitedge.io"}, "vitedge.sysinfo": set(), "vitedge.batching": set(),
               "vitedge.artefact": {"vitedge.io", "vitedge.sysinfo", "vitedge.preprocess"}, "vitedge.preprocess": set(),
               "vitedge.hosts": {"vitedge.artefact"}, "vitedge.ort_session": set(),
               # the Snakefile imports it before validating the config: the format table and no more
               "vitedge.plan": {"vitedge.artefact", "vitedge.io"}}


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return out


MODULES = _modules()


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Absolute names an import statement brings in (a submodule when `from pkg import sub` names one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
        base = ".".join(parts + ([node.module] if node.module else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, (path, tree) in MODULES.items():
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, name, path.name == "__init__.py"):
                    while target not in MODULES and "." in target:
                        target = target.rsplit(".", 1)[0]
                    if target in MODULES and target != name and target != "vitedge":
                        deps.add(target)
        graph[name] = deps
    return graph


def test_no_import_cycle():
    graph, state, cycles = _graph(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_low_modules_import_nothing_above_them():
    graph = _graph()
    for module, allowed in LOW_MODULES.items():
        assert graph[module] <= allowed, f"{module} imports {sorted(graph[module] - allowed)}"
    # the engine and the stages' own modules never import the CLI glue
    for module in ("vitedge.train", "vitedge.distill", "vitedge.pretrain", "vitedge.export", "vitedge.runtimes"):
        assert "vitedge.cli" not in graph[module], f"{module} imports vitedge.cli"
    assert not any(m.startswith("vitedge.export") for m in graph["vitedge.runtimes"]), "runtimes import export"


def _functions(tree: ast.Module):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_imports_inside_functions_are_optional_toolchains_only():
    offenders = []
    for name, (path, tree) in MODULES.items():
        for fn in _functions(tree):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for target in _targets(node, name, path.name == "__init__.py"):
                        if not target.startswith(LAZY_OK):
                            offenders.append(f"{name}.{fn.name}: {target}")
    assert not offenders, "imports inside functions: " + ", ".join(offenders)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_functions_are_short(module):
    long = [(fn.name, fn.end_lineno - fn.lineno + 1) for fn in _functions(MODULES[module][1])
            if fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{module}: functions over {MAX_FUNCTION_LINES} lines: {long}"
