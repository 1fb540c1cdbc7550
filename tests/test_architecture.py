"""The house rules (docs/ARCHITECTURE.md), checked on the source itself: the public API, the rooms of model/, no
private name across rooms, no import cycle, and the size limits of files and functions."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# source folder -> the package it installs as (pyproject's package-dir)
PACKAGES = {"model": "sigma_studio.model", "webui": "sigma_studio.webui", "finetune": "sigma_studio.finetune",
            "sigma_cli": "sigma_studio.cli", "examples": "sigma_studio.examples"}  # fmt: skip
MAX_FILE_LINES, MAX_FUNCTION_LINES, MAX_MODEL_ROOT_MODULES = 400, 60, 12

PUBLIC_API = [
    "ArchConfig", "CheckpointError", "ControlSpec", "GenerationConfig", "GenerationRecord", "GenerationRequest",
    "GenerationResult", "InputError", "LLMConfig", "LoaderConfig", "MissingDependencyError", "PromptError",
    "ResizeSpec", "SigmaError", "SigmaPipeline", "UnsupportedModeError", "VAEConfig", "ViTConfig", "build_request",
    "load_pipeline", "preflight_arch", "read_arch_config", "read_record",
]  # fmt: skip


def _modules() -> dict[str, Path]:
    """Every installed module's dotted name -> its file."""
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _package_of(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def _imports(name: str) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import of the module, in functions too."""
    out = []
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(name).split(".")
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            out += [(m, []) for m in submodules] or [(target, names)]
            if submodules and len(submodules) < len(names):
                out.append((target, [n for n in names if f"{target}.{n}" not in MODULES]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return [(t, n) for t, n in out if t in MODULES]


def test_the_public_api_is_pinned():
    model = importlib.import_module("sigma_studio.model")
    assert sorted(model.__all__) == sorted(PUBLIC_API)
    for name in PUBLIC_API:
        assert getattr(model, name) is not None
    assert "speed" in importlib.import_module("sigma_studio.model.run.pipeline").SETTINGS


def test_model_has_rooms_and_few_root_modules():
    root = sorted(p.name for p in (ROOT / "model").glob("*.py"))
    assert len(root) <= MAX_MODEL_ROOT_MODULES, root
    rooms = {p.name for p in (ROOT / "model").iterdir() if (p / "__init__.py").is_file()}
    assert {"request", "run", "weights", "data", "shapes", "evaluation", "arch"} <= rooms


def test_no_private_name_is_imported_from_another_room():
    crossings = []
    for name in MODULES:
        for target, names in _imports(name):
            if _package_of(target) == _package_of(name):
                continue
            crossings += [f"{name} imports {target}.{n}" for n in names if n.startswith("_") and n != "__version__"]
    assert not crossings, "\n".join(crossings)


def test_no_import_cycles():
    graph = {name: {t for t, _ in _imports(name) if t != name} for name in MODULES}
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert not cycles, cycles


def test_the_rooms_of_model_form_no_cycle():
    """request/ and arch/ import only the root leaves, run/ imports them, weights/ and data/ import run/, ...: the
    room graph of docs/ARCHITECTURE.md, read from the imports."""

    def room(name: str) -> str:
        parts = name.split(".")
        nested = len(parts) > 3 or MODULES[name].name == "__init__.py"
        return parts[2] if len(parts) > 2 and nested else "(root)"

    inside = [n for n in MODULES if n.startswith("sigma_studio.model.")]
    graph: dict[str, set[str]] = {}
    for name in inside:
        graph.setdefault(room(name), set()).update(
            room(t) for t, _ in _imports(name) if t.startswith("sigma_studio.model.") and room(t) != room(name)
        )
    assert graph["(root)"] == set(), "a root module imports a room: the root holds only leaves"
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert not cycles, cycles


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
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
                out.append(component)
    return out


SOURCES = sorted([*MODULES.values(), *(ROOT / "tests").glob("*.py"), ROOT / "app.py"])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_files_and_functions_stay_small(path):
    text = path.read_text()
    assert text.count("\n") <= MAX_FILE_LINES, f"{path.name}: {text.count(chr(10))} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.name}: {', '.join(long)}"
