"""`scholia eval perf`: each path beside its raw baseline, measured in the same run: ingest
(`eval.bench_ingest`); /search over HTTP vs the same query embedded and sent straight to Chroma;
/ask streamed (server-sent events) vs a raw streamed completion of the identical prompt; the
engine's choices for this CPU and its raw speed. Writes perf.json, perf.md and perf.png."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from eval import bench_ingest, harness
from eval.bench_load import Concurrency
from eval.harness import Panel, stats, write_benchmark
from scholia.settings import Settings

# /search and its raw baseline, whole and in parts
SEARCH_SERIES = ("search_http_ms", "raw_embed_plus_chroma_ms", "raw_embed_ms", "raw_chroma_ms")
Step = Callable[[str], Awaitable[None]]


async def alternate(steps: tuple[Step, Step], items: list[str]) -> None:
    """Each item through both steps, swapping their order every other item: the second may
    profit from caches the first one warmed (Chroma's pages, the embedding model's)."""
    for index, item in enumerate(items):
        for step in steps if index % 2 else steps[::-1]:
            await step(item)


async def measure_search(settings: Settings, url: str, services: Any, queries: list[str]) -> dict:
    """/search over HTTP beside the same query embedded and sent straight to Chroma."""
    top_k = 5
    candidates = max(settings.retrieval.candidates, top_k * 4)
    series: dict[str, list[float]] = {key: [] for key in SEARCH_SERIES}

    async def via_http(query: str) -> None:
        tick = time.perf_counter()
        body = {"query": query, "top_k": top_k}
        (await client.post(f"{url}/search", json=body)).raise_for_status()
        series["search_http_ms"].append((time.perf_counter() - tick) * 1000)

    async def raw(query: str) -> None:
        tick = time.perf_counter()
        vector = services.assistant.retriever.embedder.embed_query(query)
        middle = time.perf_counter()
        include = ["metadatas", "documents", "distances"]
        request = {"query_embeddings": [vector], "n_results": candidates, "include": include}
        services.store.collection.query(**request)
        end = time.perf_counter()
        series["raw_embed_ms"].append((middle - tick) * 1000)
        series["raw_chroma_ms"].append((end - middle) * 1000)
        series["raw_embed_plus_chroma_ms"].append((end - tick) * 1000)

    async with httpx.AsyncClient(timeout=60, headers=harness.auth_headers(settings)) as client:
        await alternate((via_http, raw), queries[:2])  # warm-up: model, HNSW index, connections
        for values in series.values():
            values.clear()
        await alternate((via_http, raw), queries)
    result: dict[str, Any] = {key: stats(values) for key, values in series.items()}
    result |= harness.ratios(result["search_http_ms"], result["raw_embed_plus_chroma_ms"])
    return {"queries": len(queries), "top_k": top_k, "chroma_candidates": candidates} | result


async def measure_ask(
    settings: Settings, url: str, llm_url: str, services: Any, asks: int, log: Callable
) -> dict[str, Any]:
    """/ask beside a raw completion of the identical prompt: level 1 of `Concurrency`, streamed."""
    llm = settings.llm
    limits: dict[str, Any] = {"requests_per_level": asks, "time_cap_s": math.inf, "log": log}
    limits |= {"settings": settings, "services": services, "stream": True}
    bench = Concurrency(url, llm_url, levels=[1], questions=asks, **limits)
    level = (await bench.measure())[0]
    raw = level["raw"]
    if errors := level["scholia"]["errors"] + raw["errors"]:
        raise RuntimeError(errors[0])
    result: dict[str, Any] = {"questions": len(bench.prompts), "max_tokens": llm.max_answer_tokens}
    result |= {"model": llm.model, "llm_url": llm_url, **level}
    if len(bench.asked_ms) > 1 and bench.asked_ms[1] > 0:  # the first: the warm-up
        result["ask_first_vs_second"] = round(bench.asked_ms[0] / bench.asked_ms[1], 2)
    decode_ms = raw["latency_ms"]["mean"] - raw["ttft_ms"]["mean"]
    if decode_ms > 0:  # each completion's first token came with the prefill
        decoded = raw["completion_tokens"]["mean"] - 1
        result["raw_decode_tokens_per_s"] = round(decoded / decode_ms * 1000, 2)
    return result


async def measure_services(settings: Settings, queries: int, asks: int, log: Callable) -> tuple:
    """/search and /ask of the app served on a free loopback port, beside their baselines."""
    from assistant.api.main import create_app
    from assistant.api.services import build_services, llm_base_url
    from ingest.embed import Embedder

    embedder = Embedder.of(settings.embedding)
    local = build_services(settings, embedder=embedder)
    harness.check_index(local, settings)
    llm_url = llm_base_url(settings)
    ask: dict[str, Any] = {"skipped": "--asks 0"}
    with harness.serve(create_app(settings, build_services(settings, embedder=embedder))) as url:
        log(f"perf: /search × {queries} via {url}")
        search = await measure_search(settings, url, local, harness.dev_questions(queries))
        if asks and not await local.llm.ping():
            ask = {"skipped": f"no LLM answers at {llm_url}"}
        elif asks:
            log(f"perf: /ask × {asks} (two generations each) against {llm_url}")
            ask = await measure_ask(settings, url, llm_url, local, asks, log)
    return search, ask


def measure_engine(settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    """The engine's choices for this CPU, its raw speed on the LLM server, the latest start-ups."""
    from assistant.api.services import build_services, llm_base_url
    from assistant.engine import UnsupportedCpuError, read_cpu, resolve_engine
    from assistant.generate import answer_messages
    from assistant.llm import OpenAICompatibleLLM
    from assistant.schemas import AskRequest
    from assistant.warmup import STARTUP_LOG, WARMUP_QUESTION, calibrate

    result: dict[str, Any] = {}
    try:
        result["choices"] = resolve_engine(settings.llm, read_cpu()).describe()
    except UnsupportedCpuError as error:
        result["choices"] = {"error": str(error)}
    startups = settings.logs_dir / STARTUP_LOG
    if startups.is_file():
        lines = startups.read_text(encoding="utf-8").splitlines()[-6:]
        result["startups"] = [json.loads(line) for line in lines if line.strip()]
    llm = OpenAICompatibleLLM(llm_base_url(settings), settings.llm)

    # One event loop for the ping and the calibration: the client's connections belong to it.
    async def speed() -> dict[str, Any]:
        if not await llm.ping():
            return {"skipped": f"no LLM answers at {llm.base_url}"}
        log("perf: engine speed (raw prefill and decode)")
        question = AskRequest(question=WARMUP_QUESTION)
        prepared = await build_services(settings).assistant.prepare(question)
        calibration = await calibrate(llm, answer_messages(prepared.question, prepared.packed))
        return calibration.describe()

    return result | {"speed": asyncio.run(speed())}


def run_perf(
    settings: Settings,
    out_dir: Path,
    *,
    sizes: list[int],
    queries: int = 30,
    asks: int = 3,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    report = harness.begin(errors=[], ingest={"skipped": "no sizes"})
    if sizes:
        log(f"perf: ingest benchmark, sizes {sizes}")
        try:
            report["ingest"] = bench_ingest.run_ingest_benchmark(sizes, out_dir / "ingest", log=log)
        except Exception as error:
            report["ingest"] = {"error": f"{type(error).__name__}: {error}"}
            report["errors"].append(f"ingest: {error}")
    try:
        services = measure_services(settings, queries, asks, log)
        report["search"], report["ask"] = asyncio.run(services)
    except Exception as error:
        report["errors"].append(f"search/ask: {type(error).__name__}: {error}")
        report |= {"search": {"error": str(error)}, "ask": {"error": str(error)}}
    report["engine"] = measure_engine(settings, log)
    write_benchmark(out_dir, "perf", report, panels(report))
    return report


def panels(report: dict[str, Any]) -> list[Panel]:
    search, ask = report["search"], report["ask"]
    pairs = []  # (the path's label, its latency, the baseline's label, its latency)
    if "search_http_ms" in search:
        raw = search["raw_embed_plus_chroma_ms"]
        pairs.append(("/search over HTTP", search["search_http_ms"], "raw embed + Chroma", raw))
    if "scholia" in ask:
        scholia, raw = ask["scholia"], ask["raw"]
        pairs.append(("/ask first token", scholia["ttft_ms"], "raw first token", raw["ttft_ms"]))
        pairs.append(("/ask total", scholia["latency_ms"], "raw total", raw["latency_ms"]))
    charts = []
    for label, latency, raw_label, raw_latency in pairs:
        series = {q: [latency[q], raw_latency[q]] for q in ("p50", "p95")}
        charts.append(Panel(f"{label} vs raw (ms)", "bar", series, labels=[label, raw_label]))
    return charts or [Panel("no latency measured", "bar", {})]
