from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.harness import (
    Panel,
    check_loopback,
    describe_machine,
    fmt,
    ratio,
    stats,
    table,
    write_outputs,
)


def test_describe_machine() -> None:
    machine = describe_machine()
    assert machine["logical_cores"] >= 1 and machine["usable_cores"] >= 1
    assert isinstance(machine["cpu_flags"], list) and isinstance(machine["gpu"], list)


def test_stats_and_ratio() -> None:
    figures = stats([1.0, 2.0, 3.0, 4.0])
    assert figures == {
        "n": 4,
        "p50": 2.5,
        "p95": 3.85,
        "p99": 3.97,
        "mean": 2.5,
        "min": 1.0,
        "max": 4.0,
    }
    assert stats([])["p50"] is None and stats([])["n"] == 0
    assert ratio({"p50": 3.0}, {"p50": 2.0}, "p50") == 1.5
    assert ratio({"p50": 3.0}, {"p50": 0.0}, "p50") is None
    assert ratio({"p50": None}, {"p50": 2.0}, "p50") is None


def test_numbers_and_tables() -> None:
    assert fmt(None) == "—" and fmt(0.5) == "0.500" and fmt(0.5, 2) == "0.50"
    assert fmt(12345.6) == "12,346" and fmt(7) == "7"
    assert (
        table(["a", "b"], [["x", 0.25], [3, None]])
        == "| a   | b     |\n|-----|-------|\n| x   | 0.250 |\n| 3   | —     |\n"
    )


def test_check_loopback() -> None:
    assert check_loopback("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    with pytest.raises(ValueError, match="loopback"):
        check_loopback("http://example.com:8000")


def test_write_outputs_writes_json_markdown_and_charts(tmp_path: Path) -> None:
    panels = [
        Panel("bars", "bar", {"p50": [1.0, None], "p95": [2.0, 3.0]}, labels=["a", "b"]),
        Panel("hist", "hist", {"x": [0.1, 0.2, 0.9]}, bins=[0, 0.5, 1]),
        Panel("line", "line", {"y": ([1, 2], [3.0, 4.0])}, log_x=True, marks={"end": 1.5}),
        Panel("scatter", "scatter", {"z": ([1, 2], [3.0, 40.0])}, log_y=True),
    ]
    write_outputs(tmp_path / "out", {"r.json": {"é": 1}, "r.md": "# r\n", "r.png": panels})
    assert json.loads((tmp_path / "out" / "r.json").read_text(encoding="utf-8")) == {"é": 1}
    assert (tmp_path / "out" / "r.md").read_text() == "# r\n"
    assert (tmp_path / "out" / "r.png").read_bytes()[:4] == b"\x89PNG"
