from __future__ import annotations

import json
from pathlib import Path

from assistant.api.main import create_app
from assistant.api.services import Services
from eval.bench_load import Concurrency, concurrency_panels
from scholia.settings import Settings
from tests.assistant.api.live import serve
from tests.eval.fake_openai import fake_openai
from tests.fakes import FakeLLM


def test_concurrency_benchmark_against_a_served_app(
    indexed_settings: Settings, services: Services, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    settings = indexed_settings.model_copy(
        update={"server": indexed_settings.server.model_copy(update={"rate_limit_per_minute": 0.0})}
    )
    app = create_app(settings, services)
    with serve(app) as app_url, fake_openai("ProDiff is 24 times faster [1].", "fake-llm") as llm:
        benchmark = Concurrency(app_url, llm.url, [1, 2], 4, "fake-llm", settings, services)
        benchmark.time_cap_s, benchmark.log = 120, lambda _: None
        report = benchmark.run(tmp_path)
        raw_requests = [r for r in llm.requests if r["max_tokens"] != 1]
        assert raw_requests and all(not r.get("stream") for r in raw_requests)
        assert all(r["max_tokens"] == settings.llm.max_answer_tokens for r in raw_requests)

    saved = json.loads((tmp_path / "concurrency.json").read_text())
    assert saved["levels"] == report["levels"]
    assert [row["level"] for row in saved["levels"]] == [1, 2]
    for row in saved["levels"]:
        for side in ("scholia", "raw"):
            result = row[side]
            assert result["requests"] == 4 and result["ok"] == 4, result
            assert result["answers_per_s"] > 0
            assert result["latency_ms"]["p95"] >= result["latency_ms"]["p50"] > 0
    # The raw baseline sends exactly the prompts the pipeline sent its (fake) LLM.
    pipeline_prompts = [[{"role": m.role, "content": m.content} for m in c] for c in fake_llm.calls]
    assert pipeline_prompts and all(r["messages"] in pipeline_prompts for r in raw_requests)
    text = (tmp_path / "concurrency.md").read_text()
    assert "Scholia answers/s" in text and "| 2 |" in text
    assert (tmp_path / "concurrency.png").read_bytes()[:4] == b"\x89PNG"
    for panel in concurrency_panels(report):
        assert [levels for levels, _ in panel.series.values()] == [[1, 2], [1, 2]]
