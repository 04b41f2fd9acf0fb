"""The eval harness end to end: answers from the real vLLM, judged by RAGAS with the same model.

One question, one metric (context recall: one judge call, made whether or not the answer was
declined). All five metrics make ~11 judge calls of 0.6-1.8k prompt tokens, over 20 minutes on a
2-core AVX2 CPU. What is exercised here is the judged path; answer quality is measured on whole
suites (`scholia eval run`, replayable with --record/--replay), not in this test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scholia.settings import PROJECT_ROOT, Settings
from tests.e2e.conftest import LiveServer

pytestmark = pytest.mark.e2e


def test_llm_judged_run_on_real_vllm(
    live_server: LiveServer, indexed_settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "judged"
    env = {
        **os.environ,
        "SCHOLIA_DATA_DIR": str(indexed_settings.data_dir),
        "SCHOLIA_LLM_URL": live_server.llm_url,
    }
    command = [
        sys.executable, "-m", "assistant.cli", "eval", "run", "dev",
        "--limit", "1", "--type", "fact", "--out", str(out),
        "--judge-max-tokens", "256", "--judge-timeout", "150", "--judge-metric", "context_recall",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    metrics = summary["metrics"]
    assert metrics["judge.attempted"] > 0
    # every judged score is either present or counted as missing: nothing silently lost
    # context recall is judged for every answerable question, declined or not; the others were
    # not asked for (faithfulness would be judged for an answered one).
    assert metrics["judge.context_recall.attempted"] == 1
    assert (
        metrics["judge.faithfulness.attempted"] == metrics["judge.answer_relevancy.attempted"] == 0
    )
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(results) == 1
    assert (out / "report.md").is_file()
    for plot in ("per_type.png", "scores.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"
