"""`scholia eval concurrency`: /ask (non-streamed) under 1, 4, 16 … concurrent clients, beside
the identical prompts sent straight to the LLM server at the same concurrency.

Each level sends a fixed number of requests (default 2 × the concurrency, at least 4) through
that many concurrent workers; the whole run has a time cap. The raw baseline is one
`chat.completions` call per question with the messages `/ask` sends (`answer_messages` over the
same packed sources, built in-process as `eval.perf` does), the same model, max_tokens and
temperature. Both URLs must be loopback. Writes concurrency.json, concurrency.md, concurrency.png.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from eval.perf import describe_machine, ratio, stats
from eval.suite import SUITES_DIR, load_suite
from scholia.settings import Settings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_RATE_LIMIT_RETRIES = 5


def answerable_questions(count: int) -> list[str]:
    """The dev suite's answerable questions, the first `count`."""
    suite = load_suite(SUITES_DIR / "dev.jsonl")
    return [q.question for q in suite.questions if q.answerable][:count]


def requests_for(level: int, per_level: int | None = None) -> int:
    return per_level if per_level else max(4, 2 * level)


def _check_loopback(url: str) -> None:
    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"{url} is not a loopback address; this benchmark stays on this machine")


async def identical_prompts(services: Any, questions: list[str]) -> list[tuple[str, Any]]:
    """(question, the messages /ask sends the LLM) for each question /ask would answer with the
    LLM, built as `eval.perf.measure_ask` builds its raw baseline. Questions the pipeline would
    decline before generating are left out, since they would not reach the LLM."""
    from assistant.generate import answer_messages
    from assistant.llm import as_openai_messages
    from assistant.schemas import AskRequest

    prompts = []
    for question in questions:
        prepared = await services.assistant.prepare(AskRequest(question=question))
        if prepared.confident:
            messages = answer_messages(prepared.question, prepared.packed)
            prompts.append((question, as_openai_messages(messages)))
    return prompts


async def _run_level(
    call: Callable[[int], Awaitable[dict[str, Any]]], level: int, count: int, deadline: float
) -> dict[str, Any]:
    """`count` calls through `level` concurrent workers; none starts after `deadline`."""
    latencies: list[float] = []
    errors: list[str] = []
    retries = 0
    prompt_tokens: list[float] = []
    completion_tokens: list[float] = []
    queue = iter(range(count))

    async def worker() -> None:
        nonlocal retries
        for index in queue:
            if time.monotonic() > deadline:
                errors.append("not sent: time cap reached")
                continue
            try:
                outcome = await call(index)
            except Exception as error:
                errors.append(f"{type(error).__name__}: {str(error)[:200]}")
                continue
            latencies.append(outcome["ms"])
            retries += outcome.get("retries", 0)
            prompt_tokens.append(float(outcome.get("prompt_tokens", 0)))
            completion_tokens.append(float(outcome.get("completion_tokens", 0)))

    tick = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(level)))
    wall_s = time.perf_counter() - tick
    return {
        "requests": count,
        "ok": len(latencies),
        "errors": errors,
        "rate_limit_retries": retries,
        "wall_s": round(wall_s, 3),
        "answers_per_s": round(len(latencies) / wall_s, 3) if latencies and wall_s > 0 else 0.0,
        "latency_ms": stats(latencies),
        "prompt_tokens": stats(prompt_tokens),
        "completion_tokens": stats(completion_tokens),
    }


async def _benchmark(
    app_url: str,
    llm_url: str,
    model: str,
    questions: list[str],
    levels: list[int],
    settings: Settings,
    services: Any,
    per_level: int | None,
    time_cap_s: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    import httpx
    import openai

    from assistant.api.main import api_key_of
    from assistant.api.services import build_services

    if services is None:
        services = build_services(settings)
    prompts = await identical_prompts(services, questions)
    if not prompts:
        raise RuntimeError("none of the questions reaches the LLM (every one would be declined)")
    max_tokens = settings.llm.max_answer_tokens
    temperature = settings.llm.temperature
    request_timeout = settings.llm.deadline_s * 2
    key = api_key_of(settings)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    raw_client = openai.AsyncOpenAI(
        base_url=llm_url,
        api_key=settings.llm.api_key.get_secret_value(),
        timeout=request_timeout,
        max_retries=0,
    )
    deadline = time.monotonic() + time_cap_s
    limits = httpx.Limits(
        max_connections=max(levels) + 4, max_keepalive_connections=max(levels) + 4
    )

    async with httpx.AsyncClient(timeout=request_timeout, limits=limits, headers=headers) as client:

        async def scholia(index: int) -> dict[str, Any]:
            question = prompts[index % len(prompts)][0]
            retries = 0
            while True:
                tick = time.perf_counter()
                response = await client.post(
                    f"{app_url}/ask", json={"question": question, "stream": False}
                )
                ms = (time.perf_counter() - tick) * 1000
                if response.status_code == 429 and retries < MAX_RATE_LIMIT_RETRIES:
                    retries += 1  # the server's rate limiter, not the pipeline: wait, resend
                    await asyncio.sleep(min(float(response.headers.get("retry-after", 1)), 30))
                    continue
                response.raise_for_status()
                usage = response.json().get("usage", {})
                return {"ms": ms, "retries": retries, **usage}

        async def raw(index: int) -> dict[str, Any]:
            messages: Any = prompts[index % len(prompts)][1]
            tick = time.perf_counter()
            completion = await raw_client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens, temperature=temperature
            )
            ms = (time.perf_counter() - tick) * 1000
            usage = completion.usage
            return {
                "ms": ms,
                "prompt_tokens": usage.prompt_tokens if usage else 0,
                "completion_tokens": usage.completion_tokens if usage else 0,
            }

        # Warm-up, not timed: the HTTP paths, and every prompt once into the LLM's prefix cache,
        # so neither system profits from the other having run first.
        log(f"concurrency: warm-up ({len(prompts)} prompts)")
        await scholia(0)
        for _, messages in prompts:
            await raw_client.chat.completions.create(
                model=model,
                messages=messages,
                max_tokens=1,
                temperature=temperature,
            )

        rows: list[dict[str, Any]] = []
        for position, level in enumerate(levels):
            count = requests_for(level, per_level)
            if time.monotonic() > deadline:
                rows.append({"level": level, "skipped": "time cap reached"})
                continue
            log(f"concurrency: level {level}, {count} requests each")
            order = [("scholia", scholia), ("raw", raw)]
            if position % 2:
                order.reverse()
            row: dict[str, Any] = {"level": level}
            for name, call in order:
                row[name] = await _run_level(call, level, count, deadline)
            s, r = row["scholia"], row["raw"]
            row["ratio_answers_per_s"] = (
                round(s["answers_per_s"] / r["answers_per_s"], 3) if r["answers_per_s"] else None
            )
            row["ratio_p50"] = ratio(s["latency_ms"], r["latency_ms"], "p50")
            row["ratio_p95"] = ratio(s["latency_ms"], r["latency_ms"], "p95")
            rows.append(row)
    await raw_client.close()
    return {
        "questions": len(prompts),
        "questions_left_out": len(questions) - len(prompts),
        "max_tokens": max_tokens,
        "temperature": temperature,
        "model": model,
        "levels": rows,
    }


def run_concurrency_benchmark(
    app_url: str,
    llm_url: str,
    model: str,
    questions: list[str],
    levels: list[int],
    out_dir: Path,
    *,
    settings: Settings | None = None,
    services: Any = None,
    requests_per_level: int | None = None,
    time_cap_s: float = 600.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """`settings` (default: from the environment) gives max_tokens, temperature, the API key and
    the index used to build the identical prompts; `services` may be passed to reuse one."""
    app_url, llm_url = app_url.rstrip("/"), llm_url.rstrip("/")
    _check_loopback(app_url)
    _check_loopback(llm_url)
    if not levels or any(level < 1 for level in levels):
        raise ValueError(f"levels must be positive integers, got {levels}")
    settings = settings or Settings()
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "app_url": app_url,
        "llm_url": llm_url,
        "time_cap_s": time_cap_s,
        "machine": describe_machine(),
    }
    report.update(
        asyncio.run(
            _benchmark(
                app_url,
                llm_url,
                model,
                questions,
                levels,
                settings,
                services,
                requests_per_level,
                time_cap_s,
                log,
            )
        )
    )
    report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    (out_dir / "concurrency.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "concurrency.md").write_text(render(report))
    write_plot(out_dir / "concurrency.png", report)
    return report


# ----------------------------------------------------------------------------- output


def _f(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"
    return str(value)


def render(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        "# /ask under concurrency",
        "",
        f"{report['started']} · {report['model']} at {report['llm_url']} · Scholia at "
        f"{report['app_url']} · {machine.get('cpu', '?')} · GPU: "
        f"{', '.join(machine.get('gpu') or []) or 'none'}",
        "",
        f"{report['questions']} questions (dev suite, answerable; {report['questions_left_out']} "
        f"left out as declined before generation), max_tokens {report['max_tokens']}, temperature "
        f"{report['temperature']}. Scholia = POST /ask (not streamed); raw = `chat.completions` "
        "with the identical messages. Each level: a fixed number of requests through that many "
        "concurrent clients; latency in ms; ratios are Scholia ÷ raw.",
        "",
        "| level | requests | Scholia answers/s | p50 | p95 | raw answers/s | p50 | p95 "
        "| ratio answers/s | ratio p50 | ratio p95 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for row in report["levels"]:
        if "skipped" in row:
            lines.append(f"| {row['level']} | {row['skipped']} |" + " |" * 9)
            continue
        s, r = row["scholia"], row["raw"]
        lines.append(
            f"| {row['level']} | {s['requests']} | {_f(s['answers_per_s'])} | "
            f"{_f(s['latency_ms']['p50'])} | {_f(s['latency_ms']['p95'])} | "
            f"{_f(r['answers_per_s'])} | {_f(r['latency_ms']['p50'])} | "
            f"{_f(r['latency_ms']['p95'])} | {_f(row['ratio_answers_per_s'])} | "
            f"{_f(row['ratio_p50'])} | {_f(row['ratio_p95'])} |"
        )
        for name in ("scholia", "raw"):
            side = row[name]
            if side["errors"]:
                notes.append(
                    f"- level {row['level']} {name}: {len(side['errors'])} failed "
                    f"({side['errors'][0]})"
                )
            if side["rate_limit_retries"]:
                notes.append(
                    f"- level {row['level']} {name}: {side['rate_limit_retries']} "
                    "resends after 429 (rate limit); the wait is inside its wall time"
                )
        notes.append(
            f"- level {row['level']} prompt tokens p50: Scholia {_f(s['prompt_tokens']['p50'])}, "
            f"raw {_f(r['prompt_tokens']['p50'])}; completion tokens p50: Scholia "
            f"{_f(s['completion_tokens']['p50'])}, raw {_f(r['completion_tokens']['p50'])}"
        )
    lines += ["", *notes, "", "![concurrency](concurrency.png)", ""]
    return "\n".join(lines)


def write_plot(path: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in report["levels"] if "skipped" not in row]
    levels = [row["level"] for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, label in (("scholia", "Scholia /ask"), ("raw", "raw LLM")):
        left.plot(levels, [row[name]["answers_per_s"] for row in rows], marker="o", label=label)
        right.plot(
            levels, [row[name]["latency_ms"]["p95"] or 0 for row in rows], marker="o", label=label
        )
    for ax, title in ((left, "throughput (answers/s)"), (right, "p95 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels or [1])
        ax.set_xticklabels([str(level) for level in levels] or ["1"])
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
