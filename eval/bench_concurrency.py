"""`scholia eval concurrency`: /ask (non-streamed) under 1, 4, 16 … concurrent clients, beside
the identical prompts sent straight to the LLM server at the same concurrency.

Each level sends a fixed number of requests (default 2 × the concurrency, at least 4) through
that many concurrent workers; the whole run has a time cap. The raw baseline is one
`chat.completions` call per question with the messages `/ask` sends
(`eval.harness.identical_prompts`), the same model, max_tokens and temperature. Both URLs must be
loopback. Writes concurrency.json, concurrency.md, concurrency.png.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from eval.harness import (
    Panel,
    RawLLM,
    auth_headers,
    check_loopback,
    describe_machine,
    dev_questions,
    fmt,
    identical_prompts,
    now,
    ratio,
    stats,
    table,
    write_outputs,
)
from scholia.settings import Settings

MAX_RATE_LIMIT_RETRIES = 5
Call = Callable[[int], Awaitable[dict[str, Any]]]


def answerable_questions(count: int) -> list[str]:
    """The dev suite's answerable questions, the first `count`."""
    return dev_questions(count, answerable=True)


def requests_for(level: int, per_level: int | None = None) -> int:
    return per_level if per_level else max(4, 2 * level)


async def _run_level(call: Call, level: int, count: int, deadline: float) -> dict[str, Any]:
    """`count` calls through `level` concurrent workers; none starts after `deadline`."""
    outcomes: list[dict[str, Any]] = []
    errors: list[str] = []
    queue = iter(range(count))

    async def worker() -> None:
        for index in queue:
            if time.monotonic() > deadline:
                errors.append("not sent: time cap reached")
                continue
            try:
                outcomes.append(await call(index))
            except Exception as error:
                errors.append(f"{type(error).__name__}: {str(error)[:200]}")

    tick = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(level)))
    wall_s = time.perf_counter() - tick
    ok = len(outcomes)
    return {
        "requests": count,
        "ok": ok,
        "errors": errors,
        "rate_limit_retries": sum(o.get("retries", 0) for o in outcomes),
        "wall_s": round(wall_s, 3),
        "answers_per_s": round(ok / wall_s, 3) if ok and wall_s > 0 else 0.0,
        "latency_ms": stats([o["ms"] for o in outcomes]),
        **{
            k: stats([float(o.get(k, 0)) for o in outcomes])
            for k in ("prompt_tokens", "completion_tokens")
        },
    }


async def _levels(
    scholia: Call,
    raw: Call,
    levels: list[int],
    per_level: int | None,
    deadline: float,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Each level through both systems, alternating which goes first."""
    rows: list[dict[str, Any]] = []
    for position, level in enumerate(levels):
        if time.monotonic() > deadline:
            rows.append({"level": level, "skipped": "time cap reached"})
            continue
        count = requests_for(level, per_level)
        log(f"concurrency: level {level}, {count} requests each")
        row: dict[str, Any] = {"level": level}
        for name, call in [("scholia", scholia), ("raw", raw)][:: -1 if position % 2 else 1]:
            row[name] = await _run_level(call, level, count, deadline)
        s, r = row["scholia"], row["raw"]
        row["ratio_answers_per_s"] = ratio(s, r, "answers_per_s")
        row["ratio_p50"] = ratio(s["latency_ms"], r["latency_ms"], "p50")
        row["ratio_p95"] = ratio(s["latency_ms"], r["latency_ms"], "p95")
        rows.append(row)
    return rows


async def _benchmark(
    app_url: str,
    raw_llm: RawLLM,
    questions: list[str],
    levels: list[int],
    settings: Settings,
    services: Any,
    per_level: int | None,
    time_cap_s: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    import httpx

    prompts = await identical_prompts(services, questions)
    if not prompts:
        raise RuntimeError("none of the questions reaches the LLM (every one would be declined)")
    deadline = time.monotonic() + time_cap_s
    limits = httpx.Limits(
        max_connections=max(levels) + 4, max_keepalive_connections=max(levels) + 4
    )
    timeout = settings.llm.deadline_s * 2
    async with httpx.AsyncClient(
        timeout=timeout, limits=limits, headers=auth_headers(settings)
    ) as client:

        async def scholia(index: int) -> dict[str, Any]:
            question = prompts[index % len(prompts)][0]
            for retries in range(MAX_RATE_LIMIT_RETRIES + 1):
                tick = time.perf_counter()
                response = await client.post(
                    f"{app_url}/ask", json={"question": question, "stream": False}
                )
                ms = (time.perf_counter() - tick) * 1000
                if response.status_code != 429 or retries == MAX_RATE_LIMIT_RETRIES:
                    break
                # the server's rate limiter, not the pipeline: wait, resend
                await asyncio.sleep(min(float(response.headers.get("retry-after", 1)), 30))
            response.raise_for_status()
            return {"ms": ms, "retries": retries, **response.json().get("usage", {})}

        async def raw(index: int) -> dict[str, Any]:
            return await raw_llm.complete(prompts[index % len(prompts)][1], stream=False)

        # Warm-up, not timed: the HTTP paths, and every prompt once into the LLM's prefix cache,
        # so neither system profits from the other having run first.
        log(f"concurrency: warm-up ({len(prompts)} prompts)")
        await scholia(0)
        for _, messages in prompts:
            await raw_llm.complete(messages, stream=False, max_tokens=1)
        rows = await _levels(scholia, raw, levels, per_level, deadline, log)
    await raw_llm.client.close()
    return {
        "questions": len(prompts),
        "questions_left_out": len(questions) - len(prompts),
        "max_tokens": settings.llm.max_answer_tokens,
        "temperature": settings.llm.temperature,
        "model": raw_llm.model,
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
    from assistant.api.services import build_services

    app_url, llm_url = check_loopback(app_url), check_loopback(llm_url)
    if not levels or any(level < 1 for level in levels):
        raise ValueError(f"levels must be positive integers, got {levels}")
    settings = settings or Settings()
    report: dict[str, Any] = {"started": now(), "app_url": app_url, "llm_url": llm_url}
    report |= {"time_cap_s": time_cap_s, "machine": describe_machine()}
    raw_llm = RawLLM(settings, llm_url, model, settings.llm.deadline_s * 2)
    services = services or build_services(settings)
    benchmark = _benchmark(
        app_url, raw_llm, questions, levels, settings, services, requests_per_level, time_cap_s, log
    )
    report |= asyncio.run(benchmark)
    report["finished"] = now()
    outputs = {
        "concurrency.json": report,
        "concurrency.md": render(report),
        "concurrency.png": panels(report),
    }
    write_outputs(out_dir, outputs)
    return report


def render(report: dict[str, Any]) -> str:
    machine = report["machine"]
    header = "level,requests,Scholia answers/s,p50,p95,raw answers/s,p50,p95,ratio answers/s"
    rows: list[list[Any]] = []
    notes: list[str] = []
    for row in report["levels"]:
        if "skipped" in row:
            rows.append([row["level"], row["skipped"], *[""] * 9])
            continue
        s, r = row["scholia"], row["raw"]
        rows.append(
            [row["level"], s["requests"]]
            + [
                value
                for side in (s, r)
                for value in (
                    side["answers_per_s"],
                    side["latency_ms"]["p50"],
                    side["latency_ms"]["p95"],
                )
            ]
            + [row["ratio_answers_per_s"], row["ratio_p50"], row["ratio_p95"]]
        )
        for name, side in (("scholia", s), ("raw", r)):
            if side["errors"]:
                notes.append(
                    f"- level {row['level']} {name}: {len(side['errors'])} failed ({side['errors'][0]})"
                )
            if side["rate_limit_retries"]:
                notes.append(
                    f"- level {row['level']} {name}: {side['rate_limit_retries']} resends after 429 (rate limit); the wait is inside its wall time"
                )
        tokens = {
            k: (fmt(s[k]["p50"]), fmt(r[k]["p50"])) for k in ("prompt_tokens", "completion_tokens")
        }
        notes.append(
            f"- level {row['level']} prompt tokens p50: Scholia {tokens['prompt_tokens'][0]}, raw {tokens['prompt_tokens'][1]}; completion tokens p50: Scholia {tokens['completion_tokens'][0]}, raw {tokens['completion_tokens'][1]}"
        )
    return (
        f"# /ask under concurrency\n\n{report['started']} · {report['model']} at {report['llm_url']}"
        f" · Scholia at {report['app_url']} · {machine.get('cpu')} · GPU: "
        f"{', '.join(machine.get('gpu') or []) or 'none'}\n\n"
        f"{report['questions']} questions (dev suite, answerable; {report['questions_left_out']} "
        f"left out as declined before generation), max_tokens {report['max_tokens']}, temperature "
        f"{report['temperature']}. Scholia = POST /ask (not streamed); raw = `chat.completions` "
        "with the identical messages. Each level: a fixed number of requests through that many "
        "concurrent clients; latency in ms; ratios are Scholia ÷ raw.\n\n"
        + table([*header.split(","), "ratio p50", "ratio p95"], rows)
        + "\n"
        + "\n".join(notes)
        + "\n\n![concurrency](concurrency.png)\n"
    )


def panels(report: dict[str, Any]) -> list[Panel]:
    rows = [row for row in report["levels"] if "skipped" not in row]
    levels = [row["level"] for row in rows]
    sides = {"Scholia /ask": "scholia", "raw LLM": "raw"}
    throughput = {
        label: (levels, [row[side]["answers_per_s"] for row in rows])
        for label, side in sides.items()
    }
    p95 = {
        label: (levels, [row[side]["latency_ms"]["p95"] or 0 for row in rows])
        for label, side in sides.items()
    }
    return [
        Panel(title, "line", series, xlabel="concurrent clients", log_x=True)
        for title, series in (("throughput (answers/s)", throughput), ("p95 latency (ms)", p95))
    ]
