"""The package's shape: imports go one way through the layers of percept.layers, no cycles, light modules
stay light."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import percept
from percept import _LAZY as LAZY
from percept.layers import LAYER_ORDER, layer_of

PACKAGE = Path(percept.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("percept",) + path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every percept module ``name`` imports, at module level or inside a function (``from . import x``
    counts as importing ``x``)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            prefix = ".".join(base + ([node.module] if node.module else []))
            candidates = [f"{prefix}.{alias.name}" for alias in node.names] + [prefix]
            if prefix == "percept":   # percept's lazy names (percept.RunDir -> percept.runs)
                candidates += [f"percept.{LAZY[a.name]}" for a in node.names if a.name in LAZY]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            target = str(node.args[0].value)   # importlib.import_module("percept.x") or (".x", package)
            candidates = [".".join(package + [target.lstrip(".")]) if target.startswith(".") else target]
        else:
            continue
        for target in candidates:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("percept") and target not in ("percept", name):
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_the_import_parser_sees_relative_and_function_level_imports(tmp_path):
    # the checks below are only as good as the parser: it must see the imports this package writes
    modules = {"percept.data.sources": tmp_path / "sources.py", "percept.data.cards": tmp_path / "cards.py",
               "percept.tasks": tmp_path / "tasks.py", "percept.train": tmp_path / "train.py"}
    modules["percept.runs"], modules["percept.results"] = tmp_path / "runs.py", tmp_path / "results.py"
    modules["percept.data.sources"].write_text(
        "import importlib\nfrom ..tasks import get_task\nfrom .cards import CARDS\ndef f():\n"
        "    from percept.train import train\n    from percept import RunDir\n"
        "    return importlib.import_module('percept.results')\n")
    assert _imports("percept.data.sources", modules["percept.data.sources"], modules) == {
        "percept.tasks", "percept.data.cards", "percept.train", "percept.runs", "percept.results"}


def test_every_module_is_placed_in_a_layer():
    unplaced = sorted(m for m in _modules() if m != "percept" and layer_of(m) is None)
    assert not unplaced, f"place these modules in percept/layers.py LAYERS: {unplaced}"


def test_no_module_imports_from_a_higher_layer():
    rank = {layer: i for i, layer in enumerate(LAYER_ORDER)}
    upward = [f"{m} ({layer_of(m)}) imports {t} ({layer_of(t)})"
              for m, targets in _graph().items() if m != "percept"
              for t in sorted(targets) if rank[layer_of(t)] > rank[layer_of(m)]]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}   # 1 = on the current path, 2 = done
    cycles = []

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("module", ["percept.results", "percept.paper", "percept.tasks", "percept.runs",
                                    "percept.data.cards", "percept.data.splits", "percept.options", "percept.official", "percept.cli_options", "percept.cli_config",
                                    "percept.config_names"])
def test_table_and_data_modules_do_not_load_torch(module):
    # `import percept.results` took ~11 s when it pulled in torch, timm and peft (the target: < 2 s)
    code = (f"import sys, time; t = time.perf_counter(); import {module}; "
            f"print(sorted(m for m in ('torch', 'timm', 'peft', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"import {module} loads {out.stdout.strip()}"
