from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eval import bench_ingest
from eval.perf import panels, run_perf
from scholia.settings import Settings
from tests.eval.fake_openai import fake_openai


def test_perf_end_to_end_with_a_fake_llm(
    indexed_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[list[int], Path]] = []

    def run_ingest_benchmark(sizes: list[int], out_dir: Path, log: Any) -> dict[str, Any]:
        calls.append((sizes, out_dir))  # its own test runs it (tests/eval/test_bench_ingest.py)
        return {"papers_per_s": 12.5, "raw_encode_papers_per_s": 20.0}

    monkeypatch.setattr(bench_ingest, "run_ingest_benchmark", run_ingest_benchmark)

    with fake_openai("ProDiff runs 24 times faster than real time [1].", model="fake-llm") as llm:
        settings = indexed_settings.model_copy(
            update={
                "llm": indexed_settings.llm.model_copy(update={"url": llm.url, "model": "fake-llm"})
            }
        )
        report = run_perf(settings, tmp_path, sizes=[5], queries=4, asks=1, log=lambda _: None)
        # Untimed warm-up: /ask and the raw prompt for one token; then /ask (streamed over
        # HTTP), the raw completion; then the engine's speed: a full-size prompt and a short
        # one that asks for answer tokens.
        assert len(llm.requests) == 6
        assert all(request["stream"] for request in llm.requests)
        # The raw baseline sends exactly the prompt the pipeline sends.
        assert all(r["messages"] == llm.requests[0]["messages"] for r in llm.requests[1:4])
        assert llm.requests[1]["max_tokens"] == 1
        assert llm.requests[3]["max_tokens"] == llm.requests[2]["max_tokens"] > 1
        assert llm.requests[5]["max_tokens"] > llm.requests[4]["max_tokens"]

    assert calls == [([5], tmp_path / "ingest")]
    assert report["errors"] == []
    assert report["ingest"]["papers_per_s"] == 12.5
    search = report["search"]
    assert search["search_http_ms"]["n"] == 4 and search["raw_chroma_ms"]["p50"] > 0
    assert search["ratio_p50"] > 0
    ask = report["ask"]
    pipeline, raw = ask["scholia"], ask["raw"]
    assert raw["ttft_ms"]["n"] == pipeline["ttft_ms"]["n"] == pipeline["latency_ms"]["n"] == 1
    assert pipeline["latency_ms"]["p50"] >= pipeline["ttft_ms"]["p50"] > 0
    assert ask["ratio_p50"] is not None and ask["ratio_ttft_p50"] is not None
    assert ask["ask_first_vs_second"] > 0 and raw["completion_tokens"]["p50"] > 0
    assert json.loads((tmp_path / "perf.json").read_text())["machine"]["logical_cores"] >= 1
    text = (tmp_path / "perf.md").read_text()
    assert "## /search" in text and "| ratio /search over HTTP ÷ raw embed + Chroma |" in text
    assert "| /ask time to first token |" in text and "server-sent events" in text
    assert "| ratio /ask ÷ raw time to first token |" in text
    engine = report["engine"]
    assert engine["choices"]["cpu"]["model"] and engine["choices"]["dtype"] in {
        "float32",
        "bfloat16",
    }
    assert engine["speed"]["prefill_tokens_s"] > 0 and engine["speed"]["decode_tokens_s"] > 0
    assert "## Engine" in text and "Raw engine speed" in text
    assert (tmp_path / "perf.png").read_bytes()[:4] == b"\x89PNG"
    titles = [panel.title for panel in panels(report)]
    assert titles == [
        "/search over HTTP vs raw (ms)",
        "/ask first token vs raw (ms)",
        "/ask total vs raw (ms)",
    ]


def test_perf_without_llm_or_bench(indexed_settings: Settings, tmp_path: Path) -> None:
    settings = indexed_settings.model_copy(
        update={"llm": indexed_settings.llm.model_copy(update={"url": "http://127.0.0.1:9/v1"})}
    )
    report = run_perf(settings, tmp_path, sizes=[], queries=2, asks=1, log=lambda _: None)
    assert report["ingest"] == {"skipped": "no sizes"}
    assert "no LLM answers" in report["ask"]["skipped"]
    assert report["search"]["search_http_ms"]["n"] == 2
    assert "no LLM answers" in (tmp_path / "perf.md").read_text()
    assert "no LLM answers" in report["engine"]["speed"]["skipped"]
    assert (tmp_path / "perf.png").read_bytes()[:4] == b"\x89PNG"  # /search only
