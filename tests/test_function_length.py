"""No function outside tests is longer than a screen: long ones hide steps that want names."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("assistant", "ingest", "eval", "scholia", "prompts")
MAX_LINES = 60


def long_functions(paths: Iterable[Path]) -> list[str]:
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_LINES:
                    found.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_over_sixty_lines() -> None:
    paths = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    assert len(paths) > 40
    assert long_functions(paths) == []


def test_a_long_method_is_found(tmp_path: Path) -> None:
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_LINES))
    module = tmp_path / "module.py"
    module.write_text(
        f"class A:\n    async def long(self) -> None:\n{body}\n\n\ndef short(): pass\n"
    )
    assert long_functions([module]) == [f"module.py:2 long ({MAX_LINES + 1} lines)"]
