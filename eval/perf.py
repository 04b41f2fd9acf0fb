"""`scholia eval perf`: each path beside its raw baseline, measured in the same run: ingest
(`eval.bench_ingest`); /search over HTTP vs the same query embedded and sent straight to Chroma;
/ask streamed (server-sent events) vs a raw streamed completion of the identical prompt; the
engine's choices for this CPU and its raw speed. Writes perf.json, perf.md and perf.png."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval import bench_ingest, harness
from eval.metrics import stats
from eval.output import Panel, write_benchmark
from scholia.settings import Settings

SEARCH_ROWS = {
    "search_http_ms": "/search over HTTP",
    "raw_embed_plus_chroma_ms": "raw embed + Chroma",
}
SEARCH_ROWS |= {"raw_embed_ms": "raw embed", "raw_chroma_ms": "raw Chroma query"}
ASK_ROWS = {"ask_ttft_ms": "/ask time to first token", "raw_ttft_ms": "raw time to first token"}
ASK_ROWS |= {"ask_total_ms": "/ask total (final answer)", "raw_total_ms": "raw completion total"}
SEARCH_RATIOS = {"ratio": ("search_http_ms", "raw_embed_plus_chroma_ms")}
ASK_RATIOS = {"ratio_ttft": ("ask_ttft_ms", "raw_ttft_ms")}
ASK_RATIOS |= {"ratio_total": ("ask_total_ms", "raw_total_ms")}
# section → its rows, and ratio name → (pipeline, its raw baseline): tables, ratios and charts
TABLES = {"search": (SEARCH_ROWS, SEARCH_RATIOS), "ask": (ASK_ROWS, ASK_RATIOS)}
Step = Callable[[str], Awaitable[None]]


async def alternate(steps: tuple[Step, Step], items: list[str]) -> None:
    """Each item through both steps, swapping their order every other item: the second may
    profit from caches the first one warmed (vLLM's prefix cache, Chroma's pages)."""
    for index, item in enumerate(items):
        for step in steps if index % 2 else steps[::-1]:
            await step(item)


def compared(series: dict[str, list[float]], ratios: dict[str, tuple[str, str]]) -> dict:
    """Stats of each series, and p50 and p95 of each pipeline ÷ its raw baseline."""
    result: dict[str, Any] = {key: stats(values) for key, values in series.items()}
    for name, (pipeline, raw) in ratios.items():
        result |= harness.ratios(result[pipeline], result[raw], name)
    return result


@dataclass
class Perf:
    settings: Settings
    client: Any  # httpx.AsyncClient
    url: str  # the served app
    services: Any  # the app's services, built in this process, for the raw baselines
    log: Callable[[str], None]

    async def search(self, queries: list[str]) -> dict[str, Any]:
        top_k = 5
        candidates = max(self.settings.retrieval.candidates, top_k * 4)
        series: dict[str, list[float]] = {key: [] for key in SEARCH_ROWS}

        async def via_http(query: str) -> None:
            tick = time.perf_counter()
            body = {"query": query, "top_k": top_k}
            (await self.client.post(f"{self.url}/search", json=body)).raise_for_status()
            series["search_http_ms"].append((time.perf_counter() - tick) * 1000)

        async def raw(query: str) -> None:
            tick = time.perf_counter()
            vector = self.services.assistant.retriever.embedder.embed_query(query)
            middle = time.perf_counter()
            include = ["metadatas", "documents", "distances"]
            request = {"query_embeddings": [vector], "n_results": candidates, "include": include}
            self.services.store.collection.query(**request)
            end = time.perf_counter()
            series["raw_embed_ms"].append((middle - tick) * 1000)
            series["raw_chroma_ms"].append((end - middle) * 1000)
            series["raw_embed_plus_chroma_ms"].append((end - tick) * 1000)

        await alternate((via_http, raw), queries[:2])  # warm-up: model, HNSW index, connections
        for values in series.values():
            values.clear()
        await alternate((via_http, raw), queries)
        result = {"queries": len(queries), "top_k": top_k, "chroma_candidates": candidates}
        return result | compared(series, SEARCH_RATIOS)

    async def sse_ask(self, question: str) -> tuple[float, float]:
        """POST /ask with `stream: true`: (ms to the first `token` event, ms to `final`)."""
        tick, first, event = time.perf_counter(), 0.0, ""
        body, limit_s = {"question": question, "stream": True}, self.settings.llm.deadline_s * 2
        async with self.client.stream("POST", f"{self.url}/ask", json=body, timeout=limit_s) as r:
            r.raise_for_status()
            if not r.headers.get("content-type", "").startswith("text/event-stream"):
                raise RuntimeError("/ask answered without an event stream")
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                elif line.startswith("data:") and event == "token" and not first:
                    first = time.perf_counter()
                elif line.startswith("data:") and event == "error":
                    raise RuntimeError(f"/ask stream failed: {line[5:].strip()[:200]}")
                elif line.startswith("data:") and event == "final":
                    break
        end = time.perf_counter()
        return ((first or end) - tick) * 1000, (end - tick) * 1000

    async def ask(self, llm_url: str, questions: list[str]) -> dict[str, Any]:
        llm = self.settings.llm
        raw_llm = harness.RawLLM(self.settings, llm_url, llm.model, llm.deadline_s)
        prompts = dict(await harness.identical_prompts(self.services, questions))
        series: dict[str, list[float]] = {key: [] for key in ASK_ROWS}
        tokens: dict[str, list[float]] = {"raw_completion_tokens": [], "raw_prompt_tokens": []}

        async def pipeline(question: str) -> None:
            ttft, total = await self.sse_ask(question)
            series["ask_ttft_ms"].append(ttft)
            series["ask_total_ms"].append(total)

        async def raw(question: str) -> None:
            if question in prompts:  # those the pipeline declines never reach the LLM
                outcome = await raw_llm.complete(prompts[question], stream=True)
                series["raw_ttft_ms"].append(outcome["ttft_ms"])
                series["raw_total_ms"].append(outcome["ms"])
                for key, values in tokens.items():
                    values.append(outcome[key.removeprefix("raw_")])

        await alternate((pipeline, raw), questions)
        totals, completions = series["ask_total_ms"], tokens["raw_completion_tokens"]
        result: dict[str, Any] = {"questions": len(totals), "max_tokens": llm.max_answer_tokens}
        result |= {"model": llm.model, "llm_url": llm_url, **compared(series, ASK_RATIOS)}
        result |= {key: stats(values) for key, values in tokens.items()}
        if len(totals) > 1 and totals[1] > 0:
            result["ask_first_vs_second"] = round(totals[0] / totals[1], 2)
        decode_s = (sum(series["raw_total_ms"]) - sum(series["raw_ttft_ms"])) / 1000
        if completions and decode_s > 0:  # each completion's first token came with the prefill
            decoded = sum(completions) - len(completions)
            result["raw_decode_tokens_per_s"] = round(decoded / decode_s, 2)
        return result


async def measure_services(settings: Settings, queries: int, asks: int, log: Callable) -> tuple:
    """/search and /ask of the app served on a free loopback port, beside their baselines."""
    import httpx

    from assistant.api.main import create_app
    from assistant.api.services import build_services, llm_base_url
    from ingest.embed import Embedder

    embedder = Embedder(settings.embedding.model_path, settings.embedding.batch_size)
    local = build_services(settings, embedder=embedder)
    harness.check_index(local, settings)
    llm_url = llm_base_url(settings)
    ask: dict[str, Any] = {"skipped": "--asks 0"}
    with harness.serve(create_app(settings, build_services(settings, embedder=embedder))) as url:
        async with httpx.AsyncClient(timeout=60) as client:
            perf = Perf(settings, client, url, local, log)
            log(f"perf: /search × {queries} via {url}")
            search = await perf.search(harness.dev_questions(queries))
            if asks and not await local.llm.ping():
                ask = {"skipped": f"no LLM answers at {llm_url}"}
            elif asks:
                log(f"perf: /ask × {asks} (two generations each) against {llm_url}")
                ask = await perf.ask(llm_url, harness.dev_questions(asks, fact=True))
    return search, ask


def measure_engine(settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    """The engine's choices for this CPU, its raw speed on the LLM server (prefill and decode
    tokens/s, first token for a short and a full-budget prompt), the latest start-ups."""
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
    if not asyncio.run(llm.ping()):
        return result | {"speed": {"skipped": f"no LLM answers at {llm.base_url}"}}
    log("perf: engine speed (raw prefill and decode)")

    async def speed() -> dict[str, Any]:
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
    write_benchmark(out_dir, "perf", report, panels(report), tables=TABLES)
    return report


def panels(report: dict[str, Any]) -> list[Panel]:
    """p50 and p95 of each path beside its raw baseline."""
    charts = []
    for name, (rows, ratios) in TABLES.items():
        for pipeline, raw in ratios.values() if next(iter(rows)) in report[name] else ():
            series = {q: [report[name][key][q] for key in (pipeline, raw)] for q in ("p50", "p95")}
            title = f"{rows[pipeline]} vs raw (ms)"
            charts.append(Panel(title, "bar", series, labels=[rows[pipeline], rows[raw]]))
    return charts or [Panel("no latency measured", "bar", {})]
