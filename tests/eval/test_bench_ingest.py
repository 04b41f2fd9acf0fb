"""The ingest benchmark: synthetic corpora, the result shape, the plot (children run in-process)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from eval import bench_ingest
from ingest.chunk import split_sentences
from ingest.embed import Embedder
from ingest.parse import Paper, read_papers
from ingest.pipeline import IngestReport, scan_sources


def test_synthetic_corpus_is_unique_deterministic_and_made_of_real_sentences(
    tmp_path: Path, corpus_path: Path
) -> None:
    real = {
        sentence
        for paper in read_papers(corpus_path)
        if isinstance(paper, Paper)
        for sentence in split_sentences(paper.abstract)
    }
    path = bench_ingest.write_corpus(tmp_path / "c.jsonl", 250, seed=3)
    papers = [item for item in read_papers(path) if isinstance(item, Paper)]
    assert len(papers) == 250
    report = IngestReport()
    assert len(scan_sources([path], report)) == 250 and not report.rejected
    assert len({paper.title for paper in papers}) == 250
    sentences = [s for paper in papers for s in split_sentences(paper.abstract)]
    # (a real sentence without a final period merges with the next one when re-split)
    assert sum(sentence in real for sentence in sentences) >= 0.9 * len(sentences)
    real_abstracts = {p.abstract for p in read_papers(corpus_path) if isinstance(p, Paper)}
    assert not real_abstracts & {paper.abstract for paper in papers}
    assert list(bench_ingest.synthetic_records(5, seed=3)) == list(
        bench_ingest.synthetic_records(5, seed=3)
    )
    assert list(bench_ingest.synthetic_records(5, seed=3)) != list(
        bench_ingest.synthetic_records(5, seed=4)
    )


def test_benchmark_writes_json_and_plot(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_ingest, "_warm_up", lambda: embedder)

    def in_process(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        return function(*args) | {"load_average_1m": [0.0, 0.0]}

    monkeypatch.setattr(bench_ingest, "_in_child", in_process)
    lines: list[str] = []
    summary = bench_ingest.run_ingest_benchmark([3, 6], tmp_path / "out", log=lines.append)

    saved = json.loads((tmp_path / "out" / bench_ingest.RESULT_FILE).read_text())
    assert saved == json.loads(json.dumps(summary))
    assert [r["size"] for r in summary["results"]] == [3, 6]
    for result in summary["results"]:
        assert result["papers"] == result["size"] and result["chunks"] >= result["size"]
        assert result["ingest_s"] > 0 and result["raw_encode_s"] > 0
        ratio = result["raw_encode_s"] / result["ingest_s"]
        assert result["throughput_ratio"] == pytest.approx(ratio)
        assert result["peak_rss_ingest_mb"] >= result["rss_after_model_mb"] > 0
        assert {"embed", "chroma_write", "chunk", "bm25_build", "other"} <= set(result["phases_s"])
        assert result["phases_s"]["embed"] > 0
    assert summary["s_per_doc_spread"] >= 1.0
    png = (tmp_path / "out" / bench_ingest.PLOT_FILE).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert not (tmp_path / "out" / "work").exists()  # corpora and indexes are cleaned up
    assert any("throughput_ratio" in line for line in lines)


def _process() -> dict[str, Any]:
    return {"pid": os.getpid()}


def test_each_measurement_runs_in_a_fresh_process() -> None:
    first, second = bench_ingest._in_child(_process), bench_ingest._in_child(_process)
    assert len({first["pid"], second["pid"], os.getpid()}) == 3
    assert len(first["load_average_1m"]) == 2


def test_raw_baseline_must_match_the_stored_chunks() -> None:
    ingest = {"texts_digest": "a", "papers": 1, "wall_s": 1.0, "cpu_s": 1.0}
    raw = {"texts_digest": "b", "wall_s": 1.0, "cpu_s": 1.0}
    with pytest.raises(RuntimeError, match="did not encode the chunk texts"):
        bench_ingest._combine(1, ingest, raw, raw)
