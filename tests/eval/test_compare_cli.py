from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from assistant.cli import app
from eval.cli import eval_app
from eval.compare import compare_runs
from eval.compare import render_comparison as render
from scholia.settings import Settings

runner = CliRunner()


def record(
    qid: str, rank: int | None, key: float | None, faithfulness: float | None = None
) -> dict[str, Any]:
    return {
        "id": qid,
        "type": "fact",
        "question": f"Question {qid}?",
        "answerable": True,
        "complete": True,
        "retrieval": {
            "hybrid": {
                "ids": [],
                "titles": [],
                "relevant_ranks": [rank] if rank else [],
                "scores": {"hit@1": float(rank == 1)},
            }
        },
        "answer": {"text": "an answer", "declined": False},
        "scores": {"key_string": key, "faithfulness": faithfulness, "correct_decline": 1.0},
    }


def write_run(folder: Path, records: list[dict[str, Any]], metrics: dict[str, float]) -> Path:
    folder.mkdir()
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "summary.json").write_text(json.dumps({"metrics": metrics}))
    return folder


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    a = write_run(
        tmp_path / "a",
        [
            record("q1", 3, 0.0),
            record("q2", 1, 1.0, 0.9),
            record("q3", 1, 1.0),
            record("q4", 2, 1.0),
        ],
        {
            "retrieval.hybrid.hit@1": 0.5,
            "answers.wrong_decline_rate": 0.1,
            "retrieval.hybrid.fact.hit@1": 0.5,
        },
    )
    b = write_run(
        tmp_path / "b",
        [
            record("q1", 1, 1.0),
            record("q2", None, 1.0, 0.4),
            record("q3", 1, 1.0),
            record("q5", 1, 1.0),
        ],
        {
            "retrieval.hybrid.hit@1": 0.75,
            "answers.wrong_decline_rate": 0.2,
            "retrieval.hybrid.fact.hit@1": 0.75,
        },
    )
    return a, b


def test_compare_per_question(two_runs: tuple[Path, Path]) -> None:
    comparison = compare_runs(*two_runs)
    groups = comparison.groups()
    assert [c.id for c in groups["Improved"]] == ["q1"]
    assert [c.id for c in groups["Regressed"]] == ["q2"] and not groups["Mixed"]
    assert comparison.only_a == ["q4"] and comparison.only_b == ["q5"]
    text = re.sub(" +", " ", render(comparison))  # tables are padded
    assert "hybrid gold rank #3→#1" in text and "key strings ✗→✓" in text
    assert "hybrid gold rank #1→miss" in text and "faithfulness 0.90→0.40" in text
    assert "| retrieval.hybrid.hit@1 | 0.500 | 0.750 | +0.250 | ▲ |" in text
    assert "| answers.wrong_decline_rate | 0.100 | 0.200 | +0.100 | ▼ |" in text
    assert "retrieval.hybrid.fact.hit@1" not in text  # per-type only with --all-metrics
    assert "retrieval.hybrid.fact.hit@1" in render(comparison, all_metrics=True)


def test_compare_command(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp.md"
    result = runner.invoke(
        eval_app, ["compare", str(two_runs[0]), str(two_runs[1]), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "1 improved · 1 regressed" in result.output
    assert out.read_text().startswith("# Eval comparison")
    missing = runner.invoke(eval_app, ["compare", str(tmp_path), str(two_runs[1])])
    assert missing.exit_code == 2 and "not a finished eval run" in missing.output


def test_registered_under_scholia_eval() -> None:
    result = runner.invoke(app, ["eval", "--help"])
    assert result.exit_code == 0
    for command in ("run", "compare", "check", "perf"):
        assert command in result.output


def test_run_command_gate_and_bad_suite(
    indexed_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHOLIA_DATA_DIR", str(indexed_settings.data_dir))
    out = tmp_path / "run"
    easy = tmp_path / "easy.toml"
    easy.write_text('[min]\n"retrieval.hybrid.hit@5" = 0.5\n"answers.key_string_accuracy" = 0.9\n')
    args = ["run", "dev", "--no-llm", "--limit", "3", "--out", str(out), "--no-progress"]
    result = runner.invoke(eval_app, [*args, "--check", "--thresholds", str(easy)])
    assert result.exit_code == 0, result.output
    assert "hybrid: hit@1" in result.output
    assert "skip answers.key_string_accuracy" in result.output and "gate: PASSED" in result.output

    impossible = tmp_path / "hard.toml"
    impossible.write_text('[min]\n"retrieval.hybrid.hit@1" = 1.01\n')
    result = runner.invoke(eval_app, [*args, "--check", "--thresholds", str(impossible)])
    assert result.exit_code == 1  # resumed (nothing to do), then the gate fails
    assert "FAIL retrieval.hybrid.hit@1" in result.output
    assert (
        runner.invoke(eval_app, ["check", str(out), "--thresholds", str(impossible)]).exit_code == 1
    )
    assert runner.invoke(eval_app, ["check", str(out), "--thresholds", str(easy)]).exit_code == 0

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "type": "fact", "question": "Q?"}\n{"id": \n')
    result = runner.invoke(eval_app, ["run", str(bad), "--no-llm", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2
    assert f"{bad}:2: Invalid JSON" in result.output
