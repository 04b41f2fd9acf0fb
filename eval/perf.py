"""`scholia eval perf`: each path measured beside its raw baseline, in the same run.

- ingest throughput: `eval.bench_ingest` (full ingest vs raw `encode`);
- `/search` over HTTP (the app served on a free loopback port) vs the same query embedded with
  the same MiniLM and sent straight to the Chroma collection;
- `/ask` streamed over HTTP (server-sent events): time to the first token event and to the final
  verified answer, vs a raw streamed completion of the identical prompt from the same server;
- the engine: its choices for this CPU, raw prefill/decode speed, the latest start-ups.

Absolute numbers (ms) and ratios (pipeline ÷ raw) go into perf.json, perf.md and perf.png.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval import bench_ingest
from eval.harness import (
    Panel,
    RawLLM,
    describe_machine,
    dev_questions,
    flat,
    fmt,
    identical_prompts,
    now,
    ratio,
    serve,
    stats,
    table,
    write_outputs,
)
from scholia.settings import Settings

INGEST_COLUMNS = "size chunks ingest_docs_per_s raw_encode_docs_per_s throughput_ratio "
INGEST_COLUMNS += "throughput_ratio_cpu ingest_s_per_doc peak_rss_ingest_mb"
SEARCH_ROWS = {
    "search_http_ms": "/search over HTTP",
    "raw_embed_plus_chroma_ms": "raw embed + Chroma",
    "raw_embed_ms": "raw embed",
    "raw_chroma_ms": "raw Chroma query",
}
ASK_ROWS = {
    "ask_ttft_ms": "/ask time to first token",
    "raw_ttft_ms": "raw time to first token",
    "ask_total_ms": "/ask total (final answer)",
    "raw_total_ms": "raw completion total",
}


class NotStreamingError(RuntimeError):
    pass


async def measure_search(client: Any, url: str, services: Any, queries: list[str]) -> dict:
    """HTTP /search vs embed + raw Chroma query, alternating which goes first."""
    top_k = 5
    candidates = max(services.settings.retrieval.candidates, top_k * 4)
    series: dict[str, list[float]] = {key: [] for key in SEARCH_ROWS}

    async def via_http(query: str) -> None:
        tick = time.perf_counter()
        response = await client.post(f"{url}/search", json={"query": query, "top_k": top_k})
        response.raise_for_status()
        series["search_http_ms"].append((time.perf_counter() - tick) * 1000)

    async def raw(query: str) -> None:
        tick = time.perf_counter()
        vector = services.assistant.retriever.embedder.embed_query(query)
        middle = time.perf_counter()
        include = ["metadatas", "documents", "distances"]
        services.store.collection.query(
            query_embeddings=[vector], n_results=candidates, include=include
        )
        end = time.perf_counter()
        series["raw_embed_ms"].append((middle - tick) * 1000)
        series["raw_chroma_ms"].append((end - middle) * 1000)
        series["raw_embed_plus_chroma_ms"].append((end - tick) * 1000)

    for query in queries[:2]:  # warm-up: model, HNSW index, connection pool
        await via_http(query)
        await raw(query)
    for values in series.values():
        values.clear()
    for index, query in enumerate(queries):
        for step in (raw, via_http) if index % 2 == 0 else (via_http, raw):
            await step(query)
    result: dict[str, Any] = {"queries": len(queries), "top_k": top_k}
    result |= {"chroma_candidates": candidates, **{k: stats(v) for k, v in series.items()}}
    for key in ("p50", "p95"):
        result[f"ratio_{key}"] = ratio(
            result["search_http_ms"], result["raw_embed_plus_chroma_ms"], key
        )
    return result


async def _sse_ask(client: Any, url: str, question: str, limit_s: float) -> tuple[float, float]:
    """POST /ask with `stream: true`: (ms to the first `token` event, ms to `final`)."""
    tick = time.perf_counter()
    first: float | None = None
    event = ""
    body = {"question": question, "stream": True}
    headers = {"Accept": "text/event-stream"}
    async with client.stream("POST", url, json=body, headers=headers, timeout=limit_s) as response:
        response.raise_for_status()
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            raise NotStreamingError("/ask answered without an event stream")
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:") and event == "token" and first is None:
                first = time.perf_counter()
            elif line.startswith("data:") and event == "error":
                raise RuntimeError(f"/ask stream failed: {line[5:].strip()[:200]}")
            elif line.startswith("data:") and event == "final":
                break
    end = time.perf_counter()
    return ((first or end) - tick) * 1000, (end - tick) * 1000


async def _in_process_ask(assistant: Any, question: str, max_tokens: int) -> tuple[float, float]:
    """The /ask pipeline streamed in-process: (ms to the first token, ms to the answer)."""
    from assistant.generate import answer_messages
    from assistant.schemas import AskRequest

    tick = time.perf_counter()
    prepared = await assistant.prepare(AskRequest(question=question))
    draft: list[str] = []
    first: float | None = None
    if prepared.confident:
        messages = answer_messages(prepared.question, prepared.packed)
        async for piece in assistant.llm.stream(messages, max_tokens):
            first = first or time.perf_counter()
            draft.append(piece)
    await assistant.respond(prepared, "".join(draft))
    end = time.perf_counter()
    return ((first or end) - tick) * 1000, (end - tick) * 1000


async def measure_ask(
    client: Any, url: str, services: Any, llm_url: str, questions: list[str]
) -> dict:
    """/ask streamed over HTTP vs a raw streamed completion of the identical prompt. The order
    alternates, since vLLM may cache the prompt prefix of whichever runs first. A server whose
    /ask does not stream is measured on the same pipeline streamed in-process instead."""
    settings = services.settings
    raw_llm = RawLLM(settings, llm_url, settings.llm.model, settings.llm.deadline_s)
    prompts = dict(await identical_prompts(services, questions))
    series: dict[str, list[float]] = {key: [] for key in (*ASK_ROWS, "completion", "prompt")}
    how = "POST /ask with stream=true (server-sent events)"

    async def pipeline(question: str) -> None:
        nonlocal how
        try:
            if "in-process" in how:
                raise NotStreamingError
            limit_s = settings.llm.deadline_s * 2
            ttft, total = await _sse_ask(client, f"{url}/ask", question, limit_s)
        except NotStreamingError:
            how = "the /ask pipeline streamed in-process (the route does not stream)"
            ttft, total = await _in_process_ask(
                services.assistant, question, settings.llm.max_answer_tokens
            )
        series["ask_ttft_ms"].append(ttft)
        series["ask_total_ms"].append(total)

    async def raw(question: str) -> None:
        if question in prompts:
            outcome = await raw_llm.complete(prompts[question], stream=True)
            series["raw_ttft_ms"].append(outcome["ttft_ms"])
            series["raw_total_ms"].append(outcome["ms"])
            series["completion"].append(outcome["completion_tokens"])
            series["prompt"].append(outcome["prompt_tokens"])

    for index, question in enumerate(questions):
        for step in (pipeline, raw) if index % 2 == 0 else (raw, pipeline):
            await step(question)
    return _ask_result(series, settings, llm_url, how)


def _ask_result(series: dict[str, list[float]], settings: Settings, llm_url: str, how: str) -> dict:
    result: dict[str, Any] = {
        "questions": len(series["ask_total_ms"]),
        "max_tokens": settings.llm.max_answer_tokens,
        "model": settings.llm.model,
        "llm_url": llm_url,
        "ask_measured_via": how,
        **{key: stats(series[key]) for key in ASK_ROWS},
        "raw_completion_tokens": stats(series["completion"]),
        "raw_prompt_tokens": stats(series["prompt"]),
    }
    totals = series["ask_total_ms"]
    if len(totals) > 1 and totals[1] > 0:
        result["ask_first_vs_second"] = round(totals[0] / totals[1], 2)
    decode_s = (sum(series["raw_total_ms"]) - sum(series["raw_ttft_ms"])) / 1000
    if series["completion"] and decode_s > 0:
        decoded = sum(series["completion"]) - len(series["completion"])
        result["raw_decode_tokens_per_s"] = round(decoded / decode_s, 2)
    for key in ("p50", "p95"):
        result[f"ratio_ttft_{key}"] = ratio(result["ask_ttft_ms"], result["raw_ttft_ms"], key)
        result[f"ratio_total_{key}"] = ratio(result["ask_total_ms"], result["raw_total_ms"], key)
    return result


async def _measure_services(
    settings: Settings, queries: int, asks: int, log: Callable[[str], None]
) -> tuple[dict, dict]:
    import httpx

    from assistant.api.main import create_app
    from assistant.api.services import build_services, llm_base_url
    from ingest.embed import Embedder

    embedder = Embedder(settings.embedding.model_path, settings.embedding.batch_size)
    local = build_services(settings, embedder=embedder)
    if local.store.count() == 0:
        raise RuntimeError(
            f"The index in {settings.data_dir} is empty: run `scholia ingest` first."
        )
    llm_url = llm_base_url(settings)
    with serve(create_app(settings, build_services(settings, embedder=embedder))) as url:
        async with httpx.AsyncClient(timeout=60) as client:
            log(f"perf: /search × {queries} via {url}")
            search = await measure_search(client, url, local, dev_questions(queries))
            ask: dict[str, Any] = {"skipped": "--asks 0"}
            if asks and not await local.llm.ping():
                ask = {"skipped": f"no LLM answers at {llm_url}"}
            elif asks:
                log(f"perf: /ask × {asks} (two generations each) against {llm_url}")
                ask = await measure_ask(client, url, local, llm_url, dev_questions(asks, fact=True))
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
        result["speed"] = {"skipped": f"no LLM answers at {llm.base_url}"}
        return result
    log("perf: engine speed (raw prefill and decode)")

    async def speed() -> dict[str, Any]:
        assistant = build_services(settings).assistant
        prepared = await assistant.prepare(AskRequest(question=WARMUP_QUESTION))
        messages = answer_messages(prepared.question, prepared.packed)
        return (await calibrate(llm, messages)).describe()

    result["speed"] = asyncio.run(speed())
    return result


def run_perf(
    settings: Settings,
    out_dir: Path,
    *,
    sizes: list[int],
    queries: int = 30,
    asks: int = 3,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    report: dict[str, Any] = {"started": now(), "machine": describe_machine(), "errors": []}
    report["ingest"] = {"skipped": "no sizes"}
    if sizes:
        log(f"perf: ingest benchmark, sizes {sizes}")
        try:
            report["ingest"] = bench_ingest.run_ingest_benchmark(sizes, out_dir / "ingest", log=log)
        except Exception as error:
            report["ingest"] = {"error": f"{type(error).__name__}: {error}"}
            report["errors"].append(f"ingest: {error}")
    try:
        report["search"], report["ask"] = asyncio.run(
            _measure_services(settings, queries, asks, log)
        )
    except Exception as error:
        report["errors"].append(f"search/ask: {type(error).__name__}: {error}")
        report.setdefault("search", {"error": str(error)})
        report.setdefault("ask", {"error": str(error)})
    report["engine"] = measure_engine(settings, log)
    report["finished"] = now()
    write_outputs(
        out_dir, {"perf.json": report, "perf.md": render(report), "perf.png": panels(report)}
    )
    return report


def _latency_table(block: dict[str, Any], rows: dict[str, str]) -> str:
    cells = [
        [label, *(block[key][s] for s in ("p50", "p95", "mean"))] for key, label in rows.items()
    ]
    return table(["what", "p50 ms", "p95 ms", "mean ms"], cells)


def render(report: dict[str, Any]) -> str:
    machine, ingest = report["machine"], report.get("ingest", {})
    search, ask = report.get("search", {}), report.get("ask", {})
    parts = [
        f"# Performance\n\n{report['started']} · {machine.get('cpu')} · {machine.get('logical_cores')}"
        f" logical cores ({machine.get('usable_cores')} usable, load {machine.get('load_average')})"
        f" · {machine.get('memory_gib')} GiB · flags: {', '.join(machine.get('cpu_flags', [])) or '—'}"
        f" · GPU: {', '.join(machine.get('gpu') or []) or 'none'}\n\n## Ingest\n",
    ]
    rows = ingest.get("results") or []
    if rows:
        columns = [c for c in INGEST_COLUMNS.split() if c in rows[0]]
        parts.append(table(columns, [[row.get(c) for c in columns] for row in rows]))
    parts.append(
        "".join(
            f"- {k}: {flat(v)}\n"
            for k, v in ingest.items()
            if k != "results" and not isinstance(v, dict)
        )
    )
    parts.append("## /search\n")
    if "search_http_ms" in search:
        parts += [
            f"{search['queries']} queries, top_k {search['top_k']}; raw = the same MiniLM embedding "
            f"+ one Chroma query for {search['chroma_candidates']} chunks (no BM25, no fusion, no HTTP).\n",
            _latency_table(search, SEARCH_ROWS),
            f"Ratio /search ÷ raw: p50 {fmt(search['ratio_p50'])}×, p95 {fmt(search['ratio_p95'])}×\n",
        ]
    else:
        parts.append(f"- {flat(search)}\n")
    parts.append("## /ask\n")
    if "raw_total_ms" in ask:
        parts += [
            f"{ask['questions']} questions, max_tokens {ask['max_tokens']}, {ask['model']} at "
            f"{ask['llm_url']}. Measured via {ask['ask_measured_via']}; raw = a streamed completion "
            "of the identical prompt (same packed sources, same model and settings). vLLM may reuse "
            "the cached prompt prefix for whichever of the two runs second; the order alternates.\n",
            _latency_table(ask, ASK_ROWS),
            f"Ratios /ask ÷ raw: TTFT p50 {fmt(ask['ratio_ttft_p50'])}×, p95 {fmt(ask['ratio_ttft_p95'])}×;"
            f" total p50 {fmt(ask['ratio_total_p50'])}×, p95 {fmt(ask['ratio_total_p95'])}×.\n"
            f"Raw decode: {fmt(ask.get('raw_decode_tokens_per_s'))} tokens/s; prompt p50 "
            f"{fmt(ask['raw_prompt_tokens']['p50'])} tokens, completion p50 "
            f"{fmt(ask['raw_completion_tokens']['p50'])} tokens.\n",
        ]
    else:
        parts.append(f"- {flat(ask)}\n")
    parts.append(render_engine(report.get("engine", {}), ask))
    if report.get("errors"):
        parts.append("## Errors\n\n" + "".join(f"- {e}\n" for e in report["errors"]))
    parts.append("![perf](perf.png)\n")
    return "\n".join(parts)


def render_engine(engine: dict[str, Any], ask: dict[str, Any]) -> str:
    """The CPU, the engine's choices and why, raw speed, first vs second /ask, start-ups."""
    choices = engine.get("choices", {})
    cpu = choices.get("cpu", {})
    lines = ["## Engine", ""]
    if cpu:
        lines += [
            f"CPU {cpu.get('model')} ({cpu.get('isa')}, flags {', '.join(cpu.get('flags', []))});"
            f" dtype {choices.get('dtype')}, {'eager' if choices.get('enforce_eager') else 'compiled'},"
            f" {choices.get('omp_threads')} OMP thread(s), {choices.get('max_num_batched_tokens')} tokens/step.",
            "",
            *(f"- {key}: {why}" for key, why in choices.get("reasons", {}).items()),
            "",
        ]
    lines += [f"Raw engine speed: {flat(engine.get('speed', 'not measured'))}", ""]
    if ask.get("ask_first_vs_second") is not None:
        lines += [f"First /ask of the run ÷ second: {fmt(ask['ask_first_vs_second'])}×", ""]
    lines += [f"- start-up {flat(entry)}" for entry in engine.get("startups", [])]
    return "\n".join(lines) + "\n"


def panels(report: dict[str, Any]) -> list[Panel]:
    """p50 and p95 of each path beside its raw baseline."""

    def bars(title: str, block: dict[str, Any], keys: dict[str, str]) -> Panel:
        series = {q: [block[key][q] for key in keys] for q in ("p50", "p95")}
        return Panel(title, "bar", series, labels=list(keys.values()))

    search, ask = report.get("search", {}), report.get("ask", {})
    charts = []
    if "search_http_ms" in search:
        keys = {
            "search_http_ms": "/search",
            "raw_embed_plus_chroma_ms": "raw embed+Chroma",
            "raw_chroma_ms": "raw Chroma",
        }
        charts.append(bars("/search vs raw (ms)", search, keys))
    if "raw_total_ms" in ask:
        charts.append(bars("TTFT (ms)", ask, {"ask_ttft_ms": "/ask", "raw_ttft_ms": "raw"}))
        charts.append(bars("total (ms)", ask, {"ask_total_ms": "/ask", "raw_total_ms": "raw"}))
    return charts or [Panel("no latency measured", "bar", {})]
