"""The package's shape, checked: every module sits in a layer of the layer map and imports nothing
from a layer above it (module by module and package by package), docs/architecture.md shows the same map,
no import cycle, no import inside a function except the optional toolchains, no function longer
than 80 lines."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vitedge"
LAYERS_DOC = PACKAGE.parent / "docs" / "architecture.md"  # its "Layers" table
# optional heavy toolchains (extras, NVIDIA's index, macOS): imported where they are used
LAZY_OK = ("tensorrt", "coremltools", "executorch", "ai_edge_litert", "litert_torch", "ai_edge_quantizer", "torchao",
           "h5py")
MAX_FUNCTION_LINES = 80
# The layer map (docs/architecture.md shows it and says what each layer is; test_layers_doc_matches keeps
# the two equal): a module imports from its own layer or below, never above. Names are relative to
# `vitedge.`; `vitedge` is the package's own __init__ (the version). A package's __main__ is a command
# (layer 6) whatever the package's layer.
LAYERS: dict[int, tuple[str, tuple[str, ...]]] = {
    0: ("base", ("vitedge", "io", "torch_io", "sysinfo", "preprocess", "batching", "configs", "defaults",
                 "ort_session", "bench", "metrics")),
    1: ("contract", ("artefact", "hosts", "targets", "pt2", "validation_rows", "plan")),
    2: ("models & data", ("model", "cnn", "checkpoints", "losses",
                          "data", "data.splits", "data.fer2013", "data.synthetic", "data.datasets", "data.augment",
                          "data.datacard",
                          "faces", "faces.detect", "faces.blazeface", "faces.haar", "faces.align", "faces.track",
                          "faces.draw")),
    3: ("training", ("engine", "pretrain", "distill")),
    4: ("artefacts", ("export", "export.common", "export.onnx", "export.ort_format", "export.tensorrt",
                      "export.coreml", "export.litert", "export.executorch",
                      "runtimes", "runtimes.base", "runtimes.onnx_rt", "runtimes.torch_rt", "runtimes.trt_rt",
                      "runtimes.coreml_rt", "runtimes.litert_rt", "runtimes.executorch_rt",
                      "verify",
                      "quantize", "quantize.core", "quantize.onnx", "quantize.coreml", "quantize.litert",
                      "quantize.pt2e")),
    5: ("measurement & app libraries", ("evaluate", "validate", "peers",
                                        "report", "report.cli", "report.verdicts", "report.tables", "report.summary",
                                        "report.html", "report.markdown", "report.plots", "report.write",
                                        "video")),
    6: ("commands & apps", ("stages", "finetune", "infer", "web", "web.server", "web.__main__",
                            "benchmarks", "benchmarks.compression", "benchmarks.train_throughput", "benchmarks.peers",
                            "data.__main__", "pretrain.__main__", "distill.__main__", "export.__main__",
                            "quantize.__main__", "report.__main__")),
}


def _absolute(name: str) -> str:
    return name if name == "vitedge" else f"vitedge.{name}"


LAYER = {_absolute(m): n for n, (_, modules) in LAYERS.items() for m in modules}


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


def test_every_module_has_one_layer():
    listed = [_absolute(m) for _, modules in LAYERS.values() for m in modules]
    assert len(listed) == len(set(listed)), f"in two layers: {sorted({m for m in listed if listed.count(m) > 1})}"
    missing, stale = sorted(set(MODULES) - set(LAYER)), sorted(set(LAYER) - set(MODULES))
    assert not missing, f"modules without a layer (add them to LAYERS here and to docs/architecture.md): {missing}"
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


def test_no_upward_imports():
    graph = _graph()
    # a module without a layer is test_every_module_has_one_layer's to report
    upward = [f"{m} ({LAYER[m]}) imports {d} ({LAYER[d]})" for m in sorted(graph) for d in sorted(graph[m])
              if LAYER.get(d, -1) > LAYER.get(m, 99)]
    assert not upward, "imports from a higher layer: " + "; ".join(upward)


def _unit(module: str) -> str:
    """What the folder-level check compares: a subpackage (vitedge.data, ...) for its modules, the module
    itself for a top-level module and for a package's __main__ (a command, not part of its package's layer)."""
    path = MODULES[module][0]
    if path.parent == PACKAGE or path.name == "__main__.py":
        return module
    return "vitedge." + path.relative_to(PACKAGE).parts[0]


def test_no_package_imports_a_package_above_it():
    """A package sits at the highest layer of its modules; none of its modules imports a package (or a
    module) above that, and no module imports a package that sits above the module."""
    unit_layer: dict[str, int] = {}
    for module in MODULES:
        unit_layer[_unit(module)] = max(unit_layer.get(_unit(module), 0), LAYER.get(module, 0))
    graph = _graph()
    upward = sorted({f"{_unit(m)} ({unit_layer[_unit(m)]}) imports {_unit(d)} ({unit_layer[_unit(d)]})"
                     for m in graph for d in graph[m]
                     if _unit(d) != _unit(m) and unit_layer[_unit(d)] > unit_layer[_unit(m)]})
    assert not upward, "packages importing a package above them: " + "; ".join(upward)


def test_siblings_stay_apart():
    """What the layer map cannot say inside a layer: the runtimes never import the exporters (deployment
    loads artefacts without them)."""
    graph = _graph()
    runtimes = [m for m in graph if m == "vitedge.runtimes" or m.startswith("vitedge.runtimes.")]
    assert not [(m, d) for m in runtimes for d in graph[m] if d.startswith("vitedge.export")], "runtimes import export"


def _doc_layers() -> dict[int, tuple[str, tuple[str, ...]]]:
    """docs/architecture.md's table: | <n> <name> | `module`, ... | what it is |"""
    out = {}
    for line in LAYERS_DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"(\d+) (.+)", cells[0]) if line.startswith("|") and len(cells) >= 2 else None
        if m:
            assert int(m[1]) not in out, f"docs/architecture.md: layer {m[1]} twice"
            out[int(m[1])] = (m[2], tuple(re.findall(r"`([^`]+)`", cells[1])))
    return out


def test_layers_doc_matches():
    doc = _doc_layers()
    assert sorted(doc) == sorted(LAYERS), f"docs/architecture.md has layers {sorted(doc)}, the test {sorted(LAYERS)}"
    for n, (name, modules) in LAYERS.items():
        assert doc[n][0] == name, f"layer {n}: docs/architecture.md calls it '{doc[n][0]}', the test '{name}'"
        assert sorted(doc[n][1]) == sorted(modules), (
            f"layer {n} ({name}): only in docs/architecture.md {sorted(set(doc[n][1]) - set(modules))}, "
            f"only in the test {sorted(set(modules) - set(doc[n][1]))}")


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
