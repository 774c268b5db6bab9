"""The package's shape: its layers are its folders (percept.LAYERS, in order), imports go one way through them,
no cycles, no module over 400 lines, light modules stay light, and the README's layout is the folders'."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import percept
from percept import _LAZY as LAZY

PACKAGE = Path(percept.__file__).resolve().parent
REPO = PACKAGE.parent
TOP_LEVEL = ("__init__.py", "__main__.py")      # the package's only top-level modules: everything else is in a layer


def layer_of(module: str) -> str | None:
    """The layer of ``percept.<folder>...``: its folder; ``percept.__main__`` (``python -m percept``) sits on top."""
    parts = module.split(".")
    if parts[1:] == ["__main__"]:
        return percept.LAYERS[-1]
    return parts[1] if len(parts) > 1 and parts[1] in percept.LAYERS else None


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
            candidates = [f"{prefix}.{alias.name}" for alias in node.names]
            if any(c not in modules for c in candidates):   # names of the module ``prefix``, not its submodules
                candidates.append(prefix)
            if prefix == "percept":   # percept's lazy names (percept.RunDir -> percept.engine.runs)
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
               "percept.core.tasks": tmp_path / "tasks.py", "percept.engine.train": tmp_path / "train.py"}
    modules["percept.engine.runs"], modules["percept.study.results"] = tmp_path / "runs.py", tmp_path / "results.py"
    modules["percept.data.sources"].write_text(
        "import importlib\nfrom ..core.tasks import get_task\nfrom .cards import CARDS\ndef f():\n"
        "    from percept.engine.train import train\n    from percept import RunDir\n"
        "    return importlib.import_module('percept.study.results')\n")
    assert _imports("percept.data.sources", modules["percept.data.sources"], modules) == {
        "percept.core.tasks", "percept.data.cards", "percept.engine.train", "percept.engine.runs", "percept.study.results"}


def test_the_layers_are_the_folders():
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    assert folders == sorted(percept.LAYERS), "each folder of percept/ is a layer of percept.LAYERS and back"
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert modules == sorted(TOP_LEVEL), f"put these modules in a layer's folder: {sorted(set(modules) - set(TOP_LEVEL))}"
    unplaced = sorted(m for m in _modules() if m != "percept" and layer_of(m) is None)
    assert not unplaced, f"not in a layer's folder: {unplaced}"


def test_no_module_is_longer_than_400_lines():
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, f"split these modules by concern: {long}"


def test_the_readme_layout_lists_the_folders_in_layer_order():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = [line.split("`")[1].removeprefix("percept/").rstrip("/") for line in section.splitlines()
              if line.startswith("- `percept/")]
    assert listed == list(percept.LAYERS), f"README's Layout lists {listed}; the layers are {percept.LAYERS}"


def test_no_module_imports_from_a_higher_layer():
    rank = {layer: i for i, layer in enumerate(percept.LAYERS)}
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


@pytest.mark.parametrize("module", ["percept.study.results", "percept.study.paper", "percept.core.tasks", "percept.engine.runs",
                                    "percept.data.cards", "percept.data.splits", "percept.core.options", "percept.model.official", "percept.interface.cli_options", "percept.interface.cli_config",
                                    "percept.core.resources"])
def test_table_and_data_modules_do_not_load_torch(module):
    # `import percept.study.results` took ~11 s when it pulled in torch, timm and peft (the target: < 2 s)
    code = (f"import sys, time; t = time.perf_counter(); import {module}; "
            f"print(sorted(m for m in ('torch', 'timm', 'peft', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"import {module} loads {out.stdout.strip()}"


def test_module_paths_from_before_the_folders_still_import_with_a_warning():
    code = ("import warnings, importlib; warnings.simplefilter('always'); "
            "import percept.engine.train as new, percept.core.metrics as metrics\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    import percept.train as old; from percept.metrics import srcc; from percept.model import build_model\n"
            "print(old is new, srcc is metrics.srcc, build_model.__module__, "
            "sorted(str(w.message).split(';')[0] for w in caught if w.category is DeprecationWarning))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ("True True percept.model.perceptclip ['percept.metrics moved to percept.core.metrics', "
                   "'percept.train moved to percept.engine.train']"), out


HEAVY = ("torch", "timm", "peft", "transformers", "torchvision")   # what a light module must not load


def _loads_torch(modules: dict[str, Path]) -> set[str]:
    """The modules that load a heavy dependency when imported: through their module-level imports, transitively."""
    direct: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        found = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                prefix = ".".join(base + ([node.module] if node.module else []))
                found |= {f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in node.names}
        direct[name] = found
    heavy = {n for n, found in direct.items() if any(f.split(".")[0] in HEAVY for f in found)}
    while True:
        more = {n for n, found in direct.items() if n not in heavy and found & heavy}
        if not more:
            return heavy
        heavy |= more


def test_imports_inside_functions_only_keep_a_module_light_or_say_why():
    # a function-level import keeps a torch-free module torch-free; in a module that loads torch anyway it is
    # only clutter, unless its line says why (an optional or heavy dependency used by one path)
    modules = _modules()
    heavy = _loads_torch(modules)
    clutter = []
    for name in sorted(heavy):
        path = modules[name]
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                clutter += [f"{path.relative_to(REPO)}:{sub.lineno}: {lines[sub.lineno - 1].strip()}"
                            for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))
                            and "#" not in lines[sub.end_lineno - 1]]
    assert not clutter, "move to module level, or say why on the line:\n" + "\n".join(clutter)
    assert "percept.core.tasks" not in heavy and "percept.model.perceptclip" in heavy   # the analysis sees both


def test_an_old_package_path_and_python_dash_m_on_an_old_path_still_work(tmp_path):
    code = ("import warnings; warnings.simplefilter('ignore')\n"
            "import percept.prior.pretrain as old, percept.engine.prior.pretrain as new\n"
            "import percept.data.split_files as a, percept.data.pinned as b\nprint(old is new, a is b)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=tmp_path).stdout.split() == ["True", "True"]
    run = subprocess.run([sys.executable, "-m", "percept.notebooks", "--help"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.startswith("usage: percept notebooks"), run.stderr[-500:]
