"""`scholia eval perf`: each path measured beside its raw baseline, in the same run.

- ingest throughput: `eval.bench_ingest.run_ingest_benchmark` (raw encode baseline is its own);
- `/search` over HTTP (a real uvicorn server on a free local port) vs the same query embedded
  with the same MiniLM and sent straight to the Chroma collection;
- `/ask` streamed over HTTP (server-sent events): time to the first token event and to the
  final verified answer, vs a raw streamed completion on the identical prompt
  (`answer_messages` over the same packed sources) from the same server and model.

Absolute numbers (ms) and ratios (pipeline / raw) go into perf.json, perf.md and perf.png.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eval.metrics import percentile
from eval.suite import SUITES_DIR, load_suite
from scholia.settings import Settings

INGEST_COLUMNS = (
    "size",
    "chunks",
    "ingest_docs_per_s",
    "raw_encode_docs_per_s",
    "throughput_ratio",
    "throughput_ratio_cpu",
    "ingest_s_per_doc",
    "peak_rss_ingest_mb",
)
CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


# ----------------------------------------------------------------------------- machine


def describe_machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except (ImportError, OSError):
        pass
    from assistant.engine import read_cpu

    cpu = read_cpu()
    info["cpu"] = (
        cpu.model if cpu.model != "unknown" else platform.processor() or platform.machine()
    )
    info["cpu_flags"] = [flag for flag in CPU_FLAGS if flag in cpu.flags]
    info["gpu"] = _gpus()
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["torch_cuda"] = bool(torch.cuda.is_available())
    except ImportError:
        pass
    return info


def _gpus() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        output = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in output.splitlines() if line.strip()]


# ----------------------------------------------------------------------------- helpers


def stats(values: list[float]) -> dict[str, float | int | None]:
    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "n": len(values),
        "p50": r(percentile(values, 50)),
        "p95": r(percentile(values, 95)),
        "mean": r(sum(values) / len(values)) if values else None,
        "min": r(min(values)) if values else None,
    }


def ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    if a.get(key) is None or not b.get(key):
        return None
    return round(float(a[key]) / float(b[key]), 3)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server:
    """The real FastAPI app under uvicorn in a background thread, on a free local port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = _free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _queries(count: int) -> list[str]:
    questions = [q.question for q in load_suite(SUITES_DIR / "dev.jsonl").questions]
    return [questions[i % len(questions)] for i in range(count)]


def _ask_questions(count: int) -> list[str]:
    suite = load_suite(SUITES_DIR / "dev.jsonl")
    wanted = [q.question for q in suite.questions if q.type == "fact"] or [
        q.question for q in suite.questions
    ]
    return [wanted[i % len(wanted)] for i in range(count)]


# ----------------------------------------------------------------------------- measurements


def measure_ingest(
    sizes: list[int], out_dir: Path, log: Callable[[str], None] = print
) -> dict[str, Any]:
    try:
        from eval.bench_ingest import run_ingest_benchmark  # another module; may not exist yet
    except ImportError as error:
        return {"skipped": f"eval.bench_ingest unavailable ({error})"}
    import inspect

    if "log" in inspect.signature(run_ingest_benchmark).parameters:
        return dict(run_ingest_benchmark(sizes, out_dir, log=log))
    return dict(run_ingest_benchmark(sizes, out_dir))


async def measure_search(
    client: Any, server_url: str, services: Any, queries: list[str], top_k: int
) -> dict[str, Any]:
    """HTTP /search vs embed + raw Chroma query, alternating which goes first."""
    embedder = services.assistant.retriever.embedder
    collection = services.store.collection
    candidates = max(services.settings.retrieval.candidates, top_k * 4)
    http: list[float] = []
    embed: list[float] = []
    chroma: list[float] = []
    raw_total: list[float] = []

    async def via_http(query: str) -> float:
        tick = time.perf_counter()
        response = await client.post(f"{server_url}/search", json={"query": query, "top_k": top_k})
        response.raise_for_status()
        return (time.perf_counter() - tick) * 1000

    def raw(query: str) -> tuple[float, float]:
        tick = time.perf_counter()
        vector = embedder.embed_query(query)
        middle = time.perf_counter()
        collection.query(
            query_embeddings=[vector],
            n_results=candidates,
            include=["metadatas", "documents", "distances"],
        )
        end = time.perf_counter()
        return (middle - tick) * 1000, (end - middle) * 1000

    for query in queries[:2]:  # warm-up: model, HNSW index, connection pool
        await via_http(query)
        raw(query)
    for index, query in enumerate(queries):
        if index % 2:
            http.append(await via_http(query))
            e, c = raw(query)
        else:
            e, c = raw(query)
            http.append(await via_http(query))
        embed.append(e)
        chroma.append(c)
        raw_total.append(e + c)
    result: dict[str, Any] = {
        "queries": len(queries),
        "top_k": top_k,
        "chroma_candidates": candidates,
        "search_http_ms": stats(http),
        "raw_embed_ms": stats(embed),
        "raw_chroma_ms": stats(chroma),
        "raw_embed_plus_chroma_ms": stats(raw_total),
    }
    result["ratio_p50"] = ratio(result["search_http_ms"], result["raw_embed_plus_chroma_ms"], "p50")
    result["ratio_p95"] = ratio(result["search_http_ms"], result["raw_embed_plus_chroma_ms"], "p95")
    return result


async def _sse_ask(client: Any, url: str, question: str, limit_s: float) -> tuple[float, float]:
    """POST /ask with `stream: true`: (ms to the first `token` event, ms to `final`)."""
    tick = time.perf_counter()
    first: float | None = None
    event = ""
    async with client.stream(
        "POST",
        url,
        json={"question": question, "stream": True},
        headers={"Accept": "text/event-stream"},
        timeout=limit_s,
    ) as response:
        response.raise_for_status()
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            raise NotStreamingError("/ask answered without an event stream")
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                if event == "token" and first is None:
                    first = time.perf_counter()
                elif event == "error":
                    raise RuntimeError(f"/ask stream failed: {line[5:].strip()[:200]}")
                elif event == "final":
                    break
    end = time.perf_counter()
    return ((first or end) - tick) * 1000, (end - tick) * 1000


class NotStreamingError(RuntimeError):
    pass


async def measure_ask(
    client: Any, server_url: str, services: Any, llm_url: str, questions: list[str]
) -> dict[str, Any]:
    """/ask streamed over HTTP (time to the first token event, time to the final answer) vs a
    raw streamed completion of the identical prompt from the same server and model. The order
    alternates, since vLLM may cache the prompt prefix of whichever runs first. A server whose
    /ask does not stream is measured on the same pipeline streamed in-process instead."""
    import openai

    from assistant.generate import answer_messages
    from assistant.llm import as_openai_messages
    from assistant.schemas import AskRequest

    settings = services.settings
    raw_client = openai.AsyncOpenAI(
        base_url=llm_url,
        api_key=settings.llm.api_key.get_secret_value(),
        timeout=settings.llm.deadline_s,
        max_retries=0,
    )
    assistant = services.assistant
    max_tokens = settings.llm.max_answer_tokens
    series: dict[str, list[float]] = {
        "ask_ttft_ms": [],
        "ask_total_ms": [],
        "raw_ttft_ms": [],
        "raw_total_ms": [],
    }
    raw_tokens: list[int] = []
    prompt_tokens: list[int] = []
    how = {"ask": "POST /ask with stream=true (server-sent events)"}

    async def in_process(question: str) -> tuple[float, float]:
        tick = time.perf_counter()
        prepared = await assistant.prepare(AskRequest(question=question))
        draft: list[str] = []
        first: float | None = None
        if prepared.confident:
            messages = answer_messages(prepared.question, prepared.packed)
            async for piece in assistant.llm.stream(messages, max_tokens):
                if first is None:
                    first = time.perf_counter()
                draft.append(piece)
        await assistant.respond(prepared, "".join(draft))
        end = time.perf_counter()
        return ((first or end) - tick) * 1000, (end - tick) * 1000

    async def pipeline(question: str) -> None:
        if "in-process" not in how["ask"]:
            try:
                ttft, total = await _sse_ask(
                    client, f"{server_url}/ask", question, settings.llm.deadline_s * 2
                )
            except NotStreamingError:
                how["ask"] = "the /ask pipeline streamed in-process (the route does not stream)"
            else:
                series["ask_ttft_ms"].append(ttft)
                series["ask_total_ms"].append(total)
                return
        ttft, total = await in_process(question)
        series["ask_ttft_ms"].append(ttft)
        series["ask_total_ms"].append(total)

    async def raw(question: str) -> None:
        prepared = await assistant.prepare(AskRequest(question=question))  # not timed
        if not prepared.confident:
            return
        messages: Any = as_openai_messages(answer_messages(prepared.question, prepared.packed))
        tick = time.perf_counter()
        first: float | None = None
        usage = None
        stream = await raw_client.chat.completions.create(
            model=settings.llm.model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=settings.llm.temperature,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter()
            if chunk.usage is not None:
                usage = chunk.usage
        end = time.perf_counter()
        series["raw_ttft_ms"].append(((first or end) - tick) * 1000)
        series["raw_total_ms"].append((end - tick) * 1000)
        if usage is not None:
            raw_tokens.append(usage.completion_tokens)
            prompt_tokens.append(usage.prompt_tokens)

    for index, question in enumerate(questions):
        for step in (pipeline, raw) if index % 2 == 0 else (raw, pipeline):
            await step(question)
    result: dict[str, Any] = {
        "questions": len(questions),
        "max_tokens": max_tokens,
        "model": settings.llm.model,
        "llm_url": llm_url,
        "ask_measured_via": how["ask"],
        **{name: stats(values) for name, values in series.items()},
        "raw_completion_tokens": stats([float(t) for t in raw_tokens]),
        "raw_prompt_tokens": stats([float(t) for t in prompt_tokens]),
    }
    totals = series["ask_total_ms"]
    if len(totals) > 1 and totals[1] > 0:
        result["ask_first_vs_second"] = round(totals[0] / totals[1], 2)
    decode_s = (sum(series["raw_total_ms"]) - sum(series["raw_ttft_ms"])) / 1000
    if raw_tokens and decode_s > 0:
        result["raw_decode_tokens_per_s"] = round((sum(raw_tokens) - len(raw_tokens)) / decode_s, 2)
    for key in ("p50", "p95"):
        result[f"ratio_ttft_{key}"] = ratio(result["ask_ttft_ms"], result["raw_ttft_ms"], key)
        result[f"ratio_total_{key}"] = ratio(result["ask_total_ms"], result["raw_total_ms"], key)
    return result


async def _measure_services(
    settings: Settings, queries: int, asks: int, log: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    import httpx

    from assistant.api.main import create_app
    from assistant.api.services import build_services, llm_base_url
    from ingest.embed import Embedder

    embedder = Embedder(settings.embedding.model_path, settings.embedding.batch_size)
    server_services = build_services(settings, embedder=embedder)
    local_services = build_services(settings, embedder=embedder)
    if local_services.store.count() == 0:
        raise RuntimeError(
            f"The index in {settings.data_dir} is empty: run `scholia ingest` first."
        )
    llm_url = llm_base_url(settings)
    with _Server(create_app(settings, server_services)) as server:
        async with httpx.AsyncClient(timeout=60) as client:
            log(f"perf: /search × {queries} via {server.url}")
            search = await measure_search(
                client, server.url, local_services, _queries(queries), top_k=5
            )
            if asks == 0:
                ask: dict[str, Any] = {"skipped": "--asks 0"}
            elif not await local_services.llm.ping():
                ask = {"skipped": f"no LLM answers at {llm_url}"}
            else:
                log(f"perf: /ask × {asks} (two generations each) against {llm_url}")
                ask = await measure_ask(
                    client, server.url, local_services, llm_url, _ask_questions(asks)
                )
    return search, ask


def run_perf(
    settings: Settings,
    out_dir: Path,
    *,
    sizes: list[int],
    queries: int = 30,
    asks: int = 3,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "errors": [],
    }
    if sizes:
        log(f"perf: ingest benchmark, sizes {sizes}")
        try:
            report["ingest"] = measure_ingest(sizes, out_dir / "ingest", log)
        except Exception as error:
            report["ingest"] = {"error": f"{type(error).__name__}: {error}"}
            report["errors"].append(f"ingest: {error}")
    else:
        report["ingest"] = {"skipped": "no sizes"}
    try:
        report["search"], report["ask"] = asyncio.run(
            _measure_services(settings, queries, asks, log)
        )
    except Exception as error:
        report["errors"].append(f"search/ask: {type(error).__name__}: {error}")
        report.setdefault("search", {"error": str(error)})
        report.setdefault("ask", {"error": str(error)})
    report["engine"] = measure_engine(settings, log)
    report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    import json

    (out_dir / "perf.json").write_text(json.dumps(report, indent=2) + "\n")
    write_plot(out_dir / "perf.png", report)
    (out_dir / "perf.md").write_text(render(report))
    return report


def measure_engine(settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    """The engine choices for this CPU, its raw speed (prefill and decode tokens/s, time to the
    first token for a short and a full-budget prompt, measured on the LLM server directly), and
    the latest `scholia serve` start-ups, step by step (logs/startup.jsonl)."""
    from assistant.api.services import llm_base_url
    from assistant.engine import UnsupportedCpuError, read_cpu, resolve_engine
    from assistant.generate import answer_messages
    from assistant.llm import OpenAICompatibleLLM
    from assistant.warmup import STARTUP_LOG, calibrate

    result: dict[str, Any] = {}
    try:
        result["choices"] = resolve_engine(settings.llm, read_cpu()).describe()
    except UnsupportedCpuError as error:
        result["choices"] = {"error": str(error)}
    startups = settings.logs_dir / STARTUP_LOG
    if startups.is_file():
        import json

        lines = startups.read_text(encoding="utf-8").splitlines()
        result["startups"] = [json.loads(line) for line in lines[-6:] if line.strip()]
    llm = OpenAICompatibleLLM(llm_base_url(settings), settings.llm)
    if not asyncio.run(llm.ping()):
        result["speed"] = {"skipped": f"no LLM answers at {llm.base_url}"}
        return result
    from assistant.api.services import build_services
    from assistant.schemas import AskRequest
    from assistant.warmup import WARMUP_QUESTION

    log("perf: engine speed (raw prefill and decode)")

    async def speed() -> dict[str, Any]:
        prepared = await build_services(settings).assistant.prepare(
            AskRequest(question=WARMUP_QUESTION)
        )
        messages = answer_messages(prepared.question, prepared.packed)
        return (await calibrate(llm, messages)).describe()

    result["speed"] = asyncio.run(speed())
    return result


# ----------------------------------------------------------------------------- output


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 100 else f"{value:.3g}"
    return str(value)


def render(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        "# Performance",
        "",
        f"{report['started']} · {machine.get('cpu', '?')} · {machine.get('logical_cores')} logical cores"
        f" ({machine.get('usable_cores')} usable, load {machine.get('load_average', '?')})"
        f" · {machine.get('memory_gib', '?')} GiB · flags: {', '.join(machine.get('cpu_flags', [])) or '—'}"
        f" · GPU: {', '.join(machine.get('gpu') or []) or 'none'}",
        "",
        "## Ingest",
        "",
    ]
    ingest = report.get("ingest", {})
    rows = ingest.get("results")
    if isinstance(rows, list) and rows and all(isinstance(row, dict) for row in rows):
        columns = [c for c in INGEST_COLUMNS if c in rows[0]] or [
            key for key, value in rows[0].items() if isinstance(value, int | float)
        ]
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
        lines.append("")
    lines += [
        f"- {key}: {_flat(value)}"
        for key, value in ingest.items()
        if key != "results" and not isinstance(value, dict)
    ] + [""]

    search = report.get("search", {})
    lines += ["## /search", ""]
    if "search_http_ms" in search:
        lines += [
            f"{search['queries']} queries, top_k {search['top_k']}; raw = the same MiniLM embedding "
            f"+ one Chroma query for {search['chroma_candidates']} chunks (no BM25, no fusion, no HTTP).",
            "",
            "| what | p50 ms | p95 ms | mean ms |",
            "|---|---|---|---|",
        ]
        for key, label in (
            ("search_http_ms", "/search over HTTP"),
            ("raw_embed_plus_chroma_ms", "raw embed + Chroma"),
            ("raw_embed_ms", "raw embed"),
            ("raw_chroma_ms", "raw Chroma query"),
        ):
            s = search[key]
            lines.append(f"| {label} | {_fmt(s['p50'])} | {_fmt(s['p95'])} | {_fmt(s['mean'])} |")
        lines += [
            "",
            f"Ratio /search ÷ raw: p50 {_fmt(search['ratio_p50'])}×, p95 {_fmt(search['ratio_p95'])}×",
            "",
        ]
    else:
        lines += [f"- {_flat(search)}", ""]

    ask = report.get("ask", {})
    lines += ["## /ask", ""]
    if "raw_total_ms" in ask:
        lines += [
            f"{ask['questions']} questions, max_tokens {ask['max_tokens']}, {ask['model']} at "
            f"{ask['llm_url']}. Measured via {ask['ask_measured_via']}; raw = a streamed "
            "completion of the identical prompt (same packed sources, same model and settings). "
            "vLLM may reuse the cached prompt prefix for whichever of the two runs second; the "
            "order alternates between questions.",
            "",
            "| what | p50 ms | p95 ms | mean ms |",
            "|---|---|---|---|",
        ]
        for key, label in (
            ("ask_ttft_ms", "/ask time to first token"),
            ("raw_ttft_ms", "raw time to first token"),
            ("ask_total_ms", "/ask total (final answer)"),
            ("raw_total_ms", "raw completion total"),
        ):
            s = ask[key]
            lines.append(f"| {label} | {_fmt(s['p50'])} | {_fmt(s['p95'])} | {_fmt(s['mean'])} |")
        lines += [
            "",
            f"Ratios /ask ÷ raw: TTFT p50 {_fmt(ask['ratio_ttft_p50'])}×, p95 "
            f"{_fmt(ask['ratio_ttft_p95'])}×; total p50 {_fmt(ask['ratio_total_p50'])}×, "
            f"p95 {_fmt(ask['ratio_total_p95'])}×.",
            f"Raw decode: {_fmt(ask.get('raw_decode_tokens_per_s'))} tokens/s; prompt p50 "
            f"{_fmt(ask['raw_prompt_tokens']['p50'])} tokens, completion p50 "
            f"{_fmt(ask['raw_completion_tokens']['p50'])} tokens.",
            "",
        ]
    else:
        lines += [f"- {_flat(ask)}", ""]
    lines += render_engine(report.get("engine", {}), ask)
    if report.get("errors"):
        lines += ["## Errors", ""] + [f"- {e}" for e in report["errors"]] + [""]
    lines += ["![perf](perf.png)", ""]
    return "\n".join(lines)


def render_engine(engine: dict[str, Any], ask: dict[str, Any]) -> list[str]:
    """The CPU, the engine choices and their reasons, raw engine speed, first vs second /ask,
    and the latest start-ups split by step."""
    choices = engine.get("choices", {})
    cpu = choices.get("cpu", {})
    lines = ["## Engine", ""]
    if cpu:
        lines += [
            f"CPU {cpu.get('model')} ({cpu.get('isa')}, flags {', '.join(cpu.get('flags', []))});"
            f" dtype {choices.get('dtype')}, "
            f"{'eager' if choices.get('enforce_eager') else 'compiled'}, "
            f"{choices.get('omp_threads')} OMP thread(s), "
            f"{choices.get('max_num_batched_tokens')} tokens/step.",
            "",
        ]
        lines += [f"- {key}: {why}" for key, why in choices.get("reasons", {}).items()] + [""]
    lines += [f"Raw engine speed: {_flat(engine.get('speed', 'not measured'))}", ""]
    if isinstance(ask, dict) and ask.get("ask_first_vs_second") is not None:
        lines += [f"First /ask of the run ÷ second: {_fmt(ask['ask_first_vs_second'])}×", ""]
    for entry in engine.get("startups", []):
        lines.append(f"- start-up {_flat(entry)}")
    return [*lines, ""]


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_flat(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(_flat(v) for v in value) + "]"
    return _fmt(value)


def write_plot(path: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = []
    search = report.get("search", {})
    if "search_http_ms" in search:
        panels.append(
            (
                "/search vs raw (ms)",
                [
                    ("/search", search["search_http_ms"]),
                    ("raw embed+Chroma", search["raw_embed_plus_chroma_ms"]),
                    ("raw Chroma", search["raw_chroma_ms"]),
                ],
            )
        )
    ask = report.get("ask", {})
    if "raw_total_ms" in ask:
        panels.append(("TTFT (ms)", [("/ask", ask["ask_ttft_ms"]), ("raw", ask["raw_ttft_ms"])]))
        panels.append(("total (ms)", [("/ask", ask["ask_total_ms"]), ("raw", ask["raw_total_ms"])]))
    if not panels:
        panels.append(("no latency measured", []))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, (title, bars) in zip(axes[0], panels, strict=True):
        labels = [label for label, _ in bars]
        xs = range(len(bars))
        ax.bar([x - 0.2 for x in xs], [b.get("p50") or 0 for _, b in bars], 0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], [b.get("p95") or 0 for _, b in bars], 0.4, label="p95")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, rotation=15)
        ax.set_title(title)
        if bars:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
