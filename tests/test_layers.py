"""The packages' layers: imports run one way, eval → assistant → ingest → scholia (prompts, like
scholia, imports no other package); the app runs without the evaluation stack; importing a
package changes no environment variable.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# A package may import packages of a lower layer only.
LAYER = {"eval": 3, "assistant": 2, "ingest": 1, "scholia": 0, "prompts": 0}
# The one import against the layers: `scholia eval …` loads the harness when it runs
# (assistant.cli.EvalCommands), never at import.
LAZY_UPWARD = {("assistant.cli", "eval.cli")}
EVALUATION_STACK = ("eval", "ragas", "langchain", "instructor", "matplotlib")
# Loaded only by `scholia ingest --engine ray` (the `scale` extra).
SCALE_STACK = ("ray",)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# =============================================================================== static imports
def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in LAYER
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(
    module: str, path: Path, known: set[str], at_import_only: bool
) -> set[tuple[str, int]]:
    """(project module imported, line). `at_import_only`: what runs when the module is imported
    (not in a function body or under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[tuple[str, int]] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if at_import_only and isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            ):
                continue
            if at_import_only and isinstance(child, ast.If) and _is_type_checking(child):
                for orelse in child.orelse:
                    visit(orelse)
                continue
            if isinstance(child, ast.Import):
                found.update((alias.name, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}".rstrip(".")
                for alias in child.names:
                    submodule = f"{base}.{alias.name}"
                    found.add((submodule if submodule in known else base, child.lineno))
            visit(child)

    visit(tree)
    return {(name, line) for name, line in found if name.split(".")[0] in LAYER}


def test_imports_run_one_way_between_packages() -> None:
    modules = _modules()
    known = set(modules)
    wrong = []
    for module, path in modules.items():
        for imported, line in _imports(module, path, known, at_import_only=False):
            source, target = module.split(".")[0], imported.split(".")[0]
            if source == target or LAYER[source] > LAYER[target]:
                continue
            if (module, imported) not in LAZY_UPWARD:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert not wrong, "imports against eval → assistant → ingest → scholia:\n" + "\n".join(wrong)


def test_the_upward_import_is_lazy() -> None:
    modules = _modules()
    known = set(modules)
    for module, imported in LAZY_UPWARD:
        anywhere = {name for name, _ in _imports(module, modules[module], known, False)}
        at_import = {name for name, _ in _imports(module, modules[module], known, True)}
        assert imported in anywhere, f"{module} no longer imports {imported}: drop the exception"
        assert imported not in at_import, f"{module} imports {imported} at import time"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def test_no_module_imports_itself_back_at_import_time() -> None:
    modules = _modules()
    known = set(modules)
    graph = {
        module: {
            imported
            for imported, _ in _imports(module, path, known, at_import_only=True)
            # a package's __init__ runs before its modules: importing a parent is no cycle
            if imported != module and not module.startswith(imported + ".")
        }
        for module, path in modules.items()
    }
    assert not _cycles(graph)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


# =============================================================================== the running app
def test_the_app_loads_no_evaluation_package(tmp_path: Path) -> None:
    """The CLI, the API app (built, the UI mounted) and the UI import nothing of the evaluation
    stack nor Ray, so the app image can leave them out."""
    code = f"""
import json, sys
from typer.testing import CliRunner
from assistant.cli import app
from assistant.api.main import create_app
import assistant.ui
from scholia.settings import Settings
for args in (["--help"], ["ask", "--help"], ["serve", "--help"], ["ingest", "--help"], ["config"]):
    assert CliRunner().invoke(app, args).exit_code == 0, args
create_app(Settings(data_dir={str(tmp_path)!r}))
print(json.dumps(sorted(sys.modules)))
"""
    result = _run(code)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert "gradio" in loaded and "fastapi" in loaded  # the app was really built
    stack = [m for m in loaded if m.split(".")[0].startswith(EVALUATION_STACK + SCALE_STACK)]
    assert not stack, f"the app loaded {stack}"


def test_scholia_eval_loads_the_harness_when_it_runs() -> None:
    from typer.testing import CliRunner

    from assistant.cli import app

    result = CliRunner().invoke(app, ["eval", "--help"])
    assert result.exit_code == 0, result.output
    for command in ("perf", "load", "concurrency", "run", "compare", "check"):
        assert command in result.output
    run_help = CliRunner().invoke(app, ["eval", "run", "--help"])
    assert run_help.exit_code == 0 and "--judge-url" in run_help.output
    assert "eval.cli" in sys.modules


@pytest.mark.parametrize("module", ["scholia", "assistant", "ingest", "eval", "assistant.cli"])
def test_importing_a_package_changes_no_environment_variable(module: str) -> None:
    code = f"""
import json, os
before = dict(os.environ)
import {module}
print(json.dumps({{k: v for k, v in os.environ.items() if before.get(k) != v}}))
"""
    result = _run(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == {}


def test_the_entry_point_sets_the_offline_environment(tmp_path: Path) -> None:
    code = f"""
import os
for name in ("HF_HUB_OFFLINE", "HF_HOME", "SCHOLIA_DATA_DIR"):
    os.environ.pop(name, None)
os.environ["SCHOLIA_DATA_DIR"] = {str(tmp_path)!r}
from typer.testing import CliRunner
from assistant.cli import app
assert "HF_HUB_OFFLINE" not in os.environ
assert CliRunner().invoke(app, ["config"]).exit_code == 0
print(os.environ["HF_HUB_OFFLINE"], os.environ["HF_HOME"])
"""
    result = _run(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["1", str(tmp_path / "cache" / "huggingface")]


def test_scholia_eval_without_the_harness_says_what_is_missing() -> None:
    """The app image has no eval/: the app's commands work, `scholia eval` explains."""
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "eval":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from typer.testing import CliRunner
from assistant.cli import app
assert CliRunner().invoke(app, ["ask", "--help"]).exit_code == 0
result = CliRunner().invoke(app, ["eval", "run", "--help"])
print(result.exit_code, result.output)
"""
    result = _run(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("2 ")
    assert "`scholia eval` needs the evaluation harness" in result.stdout
