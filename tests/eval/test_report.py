"""The run report on hand-made records: summary figures, flat metrics, report.md and plots."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from eval.metrics import retrieval_scores
from eval.report import summarize, write_report
from eval.runner import RunOptions
from eval.suite import Question, Suite


def _record(
    qid: str, kind: str, rank: int | None, answer: str | None, key: float
) -> dict[str, Any]:
    scores = retrieval_scores([rank] if rank else [], 1)
    return {
        "id": qid,
        "type": kind,
        "question": f"Question {qid}?",
        "answerable": True,
        "gold_titles": ["A paper"],
        "gold_ids": ["p1"],
        "gold_missing_from_index": [],
        "retrieval": {"hybrid": {"titles": ["Top paper"], "scores": scores}},
        "timings": {"retrieve_ms": {"hybrid": 12.5}, "ask_ms": 900.0, "ask": {"generate": 800.0}},
        "answer": {"text": answer, "relevant_ranks": [1] if rank == 1 else []},
        "scores": {"key_string": key, "declined": 0.0, "rouge_l": 0.5},
    }


def test_summary_metrics_and_report(tmp_path: Path) -> None:
    suite = Suite(
        tmp_path / "mini.jsonl", [Question(id=i, question="Q?", type="fact") for i in ("q1", "q2")]
    )
    records = [_record("q1", "fact", 1, "yes", 1.0), _record("q2", "which_paper", None, "no", 0.0)]
    options = asdict(RunOptions(modes=["hybrid"], answer_mode="hybrid"))
    summary = summarize(records, suite=suite, options=options, seconds=1.5)

    metrics = summary["metrics"]
    assert (
        metrics["retrieval.hybrid.hit@1"] == 0.5 and metrics["retrieval.hybrid.fact.hit@5"] == 1.0
    )
    assert metrics["answers.key_string_accuracy"] == 0.5 and metrics["answers.source_hit"] == 0.5
    assert metrics["latency.ask_ms.p50"] == 900.0 and summary["judge"] is None
    assert summary["counts_by_type"] == {"fact": 1, "which_paper": 1}

    write_report(tmp_path, summary, records)
    assert json.loads((tmp_path / "summary.json").read_text())["metrics"] == metrics
    report = re.sub(" +", " ", (tmp_path / "report.md").read_text())  # tables are padded
    assert "| hybrid | 2 | 0.500 |" in report and "## Answers" in report
    assert "## Retrieval misses at 5 (hybrid)" in report and "| q2 | which_paper |" in report
    for plot in ("per_type.png", "scores.png"):
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"
        assert f"![{plot}]({plot})" in report
