"""`scholia eval load`: many concurrent clients against a running Scholia for a fixed time,
mixing `/ask`, `/search` and requests that must be refused; latency and throughput by kind,
status counts, and the app process's memory (RSS) before, during and after.

Each client has one role for the whole run (`DEFAULT_MIX`: a quarter ask, half search, a
quarter send bad requests), so the number of questions in the LLM at once is bounded by the
asking clients rather than by how slow the LLM is — in a plain closed loop every client would
end up waiting on `/ask`. Clients send back to back (no think time) until `duration_s` is up;
then no request starts and the ones in flight are awaited (the app bounds each LLM call by
`llm.timeout_s`), so every request sent gets its answer counted.

Questions (and search queries) are the dev suite's, drawn by a seeded generator. Bad requests
and the status each must get: an empty question (422), a body over the app's size limit (413),
malformed JSON (422, "invalid JSON"); each must also carry a JSON `detail`. Under load, `/ask`
may end in 503/504 (LLM unavailable or too slow); any other 5xx, a transport error, or a bad
request answered otherwise is "unexpected". The URL must be loopback.
Writes load.json, load.md and load.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from eval.bench_concurrency import _check_loopback
from eval.metrics import percentile
from eval.perf import describe_machine
from eval.suite import SUITES_DIR, load_suite
from scholia.settings import Settings

DEFAULT_MIX: Mapping[str, float] = {"ask": 0.25, "search": 0.5, "bad": 0.25}
ASK, SEARCH = "ask", "search"
EMPTY_QUESTION, OVERSIZED_BODY, MALFORMED_JSON = (
    "empty question",
    "oversized body",
    "malformed JSON",
)
# (route, status it must get) for each kind of request.
EXPECTED: dict[str, tuple[str, int]] = {
    ASK: ("/ask", 200),
    SEARCH: ("/search", 200),
    EMPTY_QUESTION: ("/ask", 422),
    OVERSIZED_BODY: ("/ask", 413),
    MALFORMED_JSON: ("/search", 422),
}
BAD_KINDS = (EMPTY_QUESTION, OVERSIZED_BODY, MALFORMED_JSON)
# Load shedding and LLM trouble: the answer to an /ask the app could not serve, not a fault.
TOLERATED_ASK_STATUSES = {503, 504}
SAMPLE_EVERY_S = 2.0
SETTLE_S = 2.0  # after the last answer, before the "after" RSS sample
MB = 1024 * 1024


@dataclass(frozen=True)
class Outcome:
    """One request: when it started (s into the run), what it was, how it ended."""

    t: float
    kind: str
    status: int | str  # HTTP status, or the client-side error ("ReadTimeout", "ConnectError")
    ms: float
    unexpected: str = ""  # why it counts against the app; empty when fine
    warmup: bool = False


def client_roles(clients: int, mix: Mapping[str, float] = DEFAULT_MIX) -> list[str]:
    """Each client's role ("ask", "search" or "bad"), in the shares of `mix`, at least one each."""
    if clients < len(mix):
        raise ValueError(f"need at least {len(mix)} clients for the mix {dict(mix)}")
    total = sum(mix.values())
    counts = {role: max(1, round(clients * share / total)) for role, share in mix.items()}
    largest = max(counts, key=lambda role: counts[role])
    counts[largest] += clients - sum(counts.values())
    return [role for role, count in counts.items() for _ in range(count)]


def app_pid_for(url: str) -> int:
    """The process listening on the URL's port (the app, for its RSS)."""
    import psutil

    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    for connection in psutil.net_connections(kind="tcp"):
        if (
            connection.status == psutil.CONN_LISTEN
            and connection.laddr
            and connection.laddr.port == port
            and connection.pid
        ):
            return int(connection.pid)
    raise RuntimeError(f"no process of this user listens on port {port}; pass --pid")


def post_answered_early(
    url: str, path: str, body: bytes, headers: dict[str, str], timeout_s: float
) -> tuple[int, bytes]:
    """POST on a blocking connection that still reads the answer when the server replies
    before reading the body (413) and closes, so that sending the rest fails.

    httpx's async transport cannot: once a write fails it marks the connection broken and never
    reads the 413 already sent. http.client ignores the failed write, then reads the answer.
    """
    parsed = urlparse(url)
    connection = http.client.HTTPConnection(
        parsed.hostname or "127.0.0.1", parsed.port or 80, timeout=timeout_s
    )
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def judge(kind: str, status: int, body: bytes) -> str:
    """Why this answer counts against the app ("" when it is what it should be)."""
    wanted = EXPECTED[kind][1]
    if status == wanted and kind in BAD_KINDS:
        try:
            detail = json.loads(body).get("detail")
        except (ValueError, AttributeError):
            detail = None
        return "" if isinstance(detail, str) and detail else f"{status} without a JSON detail"
    if status == wanted or (kind == ASK and status in TOLERATED_ASK_STATUSES):
        return ""
    return f"{status}, expected {wanted}: {body[:160].decode('utf-8', 'replace')}"


def answered_within(outcomes: list[Outcome]) -> float:
    """Seconds from the start of the run to the last of these answers."""
    return max((o.t + o.ms / 1000 for o in outcomes), default=0.0)


def per_second(outcomes: list[Outcome]) -> float:
    """Throughput of one kind or route: its answers over the time until its last answer (a
    /search stops with the load, an /ask in flight may take minutes more)."""
    window = answered_within(outcomes)
    return round(len(outcomes) / window, 3) if window > 0 else 0.0


def summarize_kind(outcomes: list[Outcome]) -> dict[str, Any]:
    latencies = [o.ms for o in outcomes if isinstance(o.status, int)]

    def pct(q: float) -> float | None:
        value = percentile(latencies, q)
        return None if value is None else round(value, 1)

    return {
        "route": EXPECTED[outcomes[0].kind][0] if outcomes else None,
        "expected_status": EXPECTED[outcomes[0].kind][1] if outcomes else None,
        "requests": len(outcomes),
        "per_s": per_second(outcomes),
        "latency_ms": {
            "p50": pct(50),
            "p95": pct(95),
            "p99": pct(99),
            "max": round(max(latencies), 1) if latencies else None,
        },
        "statuses": _status_counts(outcomes),
        "unexpected": sum(bool(o.unexpected) for o in outcomes),
    }


def _status_counts(outcomes: list[Outcome]) -> dict[str, int]:
    counts = Counter(str(o.status) for o in outcomes)
    return dict(sorted(counts.items()))


def summarize(
    outcomes: list[Outcome], rss: list[tuple[float, float]], timing: dict[str, float]
) -> dict[str, Any]:
    """The report's figures: by kind, by route, overall statuses, unexpected answers, RSS."""
    wall_s = timing["wall_s"]
    kinds = {kind: [o for o in outcomes if o.kind == kind] for kind in EXPECTED}
    by_route: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_route.setdefault(EXPECTED[outcome.kind][0], []).append(outcome)
    unexpected = [o for o in outcomes if o.unexpected]
    server_errors = [
        o
        for o in outcomes
        if isinstance(o.status, int) and o.status >= 500 and o.status not in {503, 504}
    ]
    return {
        "requests": len(outcomes),
        "per_s": round(len(outcomes) / wall_s, 3) if wall_s > 0 else 0.0,
        "statuses": _status_counts(outcomes),
        "by_kind": {kind: summarize_kind(group) for kind, group in kinds.items() if group},
        "by_route": {
            route: {
                "requests": len(group),
                "per_s": per_second(group),
                "statuses": _status_counts(group),
            }
            for route, group in sorted(by_route.items())
        },
        "unexpected": len(unexpected),
        "unexpected_examples": [f"{o.kind}: {o.unexpected}" for o in unexpected[:20]],
        "server_errors_other_than_503_504": len(server_errors),
        "rss_mb": _rss_summary(rss, timing),
    }


def _rss_summary(rss: list[tuple[float, float]], timing: dict[str, float]) -> dict[str, Any]:
    during = [mb for t, mb in rss if t <= timing["duration_s"]]
    after_warmup = next((mb for t, mb in rss if t >= timing["warmup_s"]), None)
    after = rss[-1][1] if rss else None
    return {
        "before": rss[0][1] if rss else None,
        "after_warmup": after_warmup,
        "peak_during": max(during) if during else None,
        "after": after,
        "growth_after_warmup": (
            round(after - after_warmup, 1)
            if after is not None and after_warmup is not None
            else None
        ),
        "samples": [[round(t, 2), mb] for t, mb in rss],
    }


async def _load(
    url: str,
    clients: int,
    duration_s: float,
    warmup_s: float,
    pid: int,
    settings: Settings,
    mix: Mapping[str, float],
    seed: int,
    oversize_bytes: int,
    request_timeout_s: float,
    progress: bool,
    log: Callable[[str], None],
) -> tuple[list[Outcome], list[tuple[float, float]], dict[str, float], list[str]]:
    import httpx
    import psutil
    from tqdm import tqdm

    from assistant.api.main import api_key_of

    questions = [q.question for q in load_suite(SUITES_DIR / "dev.jsonl").questions]
    roles = client_roles(clients, mix)
    oversized = b'{"question": "' + b"x" * oversize_bytes + b'"}'
    key = api_key_of(settings)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    process = psutil.Process(pid)
    rss: list[tuple[float, float]] = []
    outcomes: list[Outcome] = []
    start = time.monotonic()

    def now() -> float:
        return time.monotonic() - start

    def sample_rss() -> None:
        rss.append((now(), round(process.memory_info().rss / MB, 1)))

    async def request(
        client: httpx.AsyncClient, kind: str, rng: random.Random
    ) -> tuple[int, bytes]:
        json_type = {"content-type": "application/json"}
        if kind == OVERSIZED_BODY:
            return await asyncio.to_thread(
                post_answered_early,
                url,
                "/ask",
                oversized,
                {**headers, **json_type},
                request_timeout_s,
            )
        if kind == ASK:
            payload = {"question": rng.choice(questions), "stream": False}
            response = await client.post("/ask", json=payload)
        elif kind == SEARCH:
            payload = {"query": rng.choice(questions), "top_k": 5}
            response = await client.post("/search", json=payload)
        elif kind == EMPTY_QUESTION:
            response = await client.post("/ask", json={"question": ""})
        else:
            malformed = b'{"query": "diffusion", "top_k": '
            response = await client.post("/search", content=malformed, headers=json_type)
        return response.status_code, response.content

    async def run_client(index: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(seed * 1000 + index)
        role = roles[index]
        while now() < duration_s:
            kind = rng.choice(BAD_KINDS) if role == "bad" else role
            began = now()
            tick = time.perf_counter()
            try:
                status, body = await request(client, kind, rng)
            except (httpx.HTTPError, OSError, http.client.HTTPException) as error:
                ms = (time.perf_counter() - tick) * 1000
                name = type(error).__name__
                failure = f"client error {name}: {error}"
                outcomes.append(Outcome(began, kind, name, ms, failure, began < warmup_s))
                continue
            ms = (time.perf_counter() - tick) * 1000
            verdict = judge(kind, status, body)
            outcomes.append(Outcome(began, kind, status, ms, verdict, began < warmup_s))

    sample_rss()  # before: nothing sent yet
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    bar = tqdm(total=round(duration_s), desc="load", unit="s", disable=not progress)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=request_timeout_s, limits=limits
    ) as client:
        tasks = [asyncio.create_task(run_client(i, client)) for i in range(clients)]
        next_note = 10.0
        while not all(task.done() for task in tasks):
            await asyncio.sleep(min(SAMPLE_EVERY_S, 1.0))
            if rss and now() - rss[-1][0] >= SAMPLE_EVERY_S - 0.05:
                sample_rss()
            bar.n = min(round(now()), round(duration_s))
            bar.set_postfix(
                answers=len(outcomes), unexpected=sum(bool(o.unexpected) for o in outcomes)
            )
            if not progress and now() >= next_note:
                phase = "draining" if now() >= duration_s else f"{now():.0f}/{duration_s:.0f} s"
                log(f"load: {phase}, {len(outcomes)} answers, {rss[-1][1]:.0f} MB RSS")
                next_note += 10.0
        for task in tasks:
            task.result()  # a bug in a client surfaces here, not as a quiet gap in the data
        wall_s = now()
    bar.close()
    await asyncio.sleep(SETTLE_S)
    sample_rss()  # after: every answer is in
    timing = {"duration_s": duration_s, "warmup_s": warmup_s, "wall_s": round(wall_s, 3)}
    return sorted(outcomes, key=lambda o: o.t), rss, timing, roles


def run_load_test(
    url: str,
    out_dir: Path,
    *,
    clients: int = 32,
    duration_s: float = 60.0,
    warmup_s: float = 15.0,
    pid: int | None = None,
    settings: Settings | None = None,
    mix: Mapping[str, float] = DEFAULT_MIX,
    seed: int = 8,
    oversize_bytes: int | None = None,
    request_timeout_s: float | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the load, write load.json, load.md and load.png into `out_dir`, return the report.

    `pid`: the app's process (default: whatever listens on the URL's port). `settings` (default:
    from the environment) gives the API key, the body size limit (the oversized body is 1 KiB
    over it) and the LLM timeout (each request may take that plus a minute).
    """
    url = url.rstrip("/")
    _check_loopback(url)
    if clients < 1 or duration_s <= 0 or not 0 <= warmup_s < duration_s:
        raise ValueError("need clients ≥ 1, duration > 0 and 0 ≤ warmup < duration")
    settings = settings or Settings()
    pid = pid or app_pid_for(url)
    oversize_bytes = oversize_bytes or settings.server.max_body_bytes + 1024
    request_timeout_s = request_timeout_s or settings.llm.deadline_s + 60
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    outcomes, rss, timing, roles = asyncio.run(
        _load(
            url,
            clients,
            duration_s,
            warmup_s,
            pid,
            settings,
            mix,
            seed,
            oversize_bytes,
            request_timeout_s,
            progress,
            log,
        )
    )
    report: dict[str, Any] = {
        "started": started,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "url": url,
        "pid": pid,
        "clients": clients,
        "roles": dict(Counter(roles)),
        "timing": timing,
        "oversize_bytes": oversize_bytes,
        "request_timeout_s": request_timeout_s,
        "seed": seed,
        "machine": describe_machine(),
        **summarize(outcomes, rss, timing),
        "outcomes": [asdict(o) for o in outcomes],
    }
    (out_dir / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "load.md").write_text(render(report))
    write_plot(out_dir / "load.png", report)
    return report


# ----------------------------------------------------------------------------- output


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms"


def _mb(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} MB"


def _statuses(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{status}: {count}" for status, count in counts.items())


def render(report: dict[str, Any]) -> str:
    timing, machine, rss = report["timing"], report["machine"], report["rss_mb"]
    roles = ", ".join(f"{count} {role}" for role, count in report["roles"].items())
    lines = [
        "# Scholia under load",
        "",
        f"{report['started']} · {report['url']} (pid {report['pid']}) · "
        f"{machine.get('cpu', '?')}, {machine.get('logical_cores')} cores · load average "
        f"{machine.get('load_average')}",
        "",
        f"{report['clients']} concurrent clients ({roles}) for {timing['duration_s']:g} s, back "
        f"to back; then the requests in flight were awaited (all answered after "
        f"{timing['wall_s']:.0f} s). req/s: answers of that kind ÷ the time until its last "
        "answer; latency from sending to the whole answer.",
        "",
        "| kind | route | requests | req/s | p50 | p95 | p99 | max | statuses |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, row in report["by_kind"].items():
        latency = row["latency_ms"]
        lines.append(
            f"| {kind} | {row['route']} | {row['requests']} | {row['per_s']:.2f} | "
            f"{_ms(latency['p50'])} | {_ms(latency['p95'])} | {_ms(latency['p99'])} | "
            f"{_ms(latency['max'])} | {_statuses(row['statuses'])} |"
        )
    lines += [
        "",
        f"All: {report['requests']} requests, {report['per_s']:.2f}/s over "
        f"{timing['wall_s']:.0f} s; statuses "
        f"{_statuses(report['statuses'])}. By route: "
        + "; ".join(
            f"{route} {row['requests']} ({row['per_s']:.2f}/s)"
            for route, row in report["by_route"].items()
        )
        + ".",
        "",
        f"App RSS: before {_mb(rss['before'])}, after the {timing['warmup_s']:g} s warm-up "
        f"{_mb(rss['after_warmup'])}, peak during {_mb(rss['peak_during'])}, after "
        f"{_mb(rss['after'])} (sampled every {SAMPLE_EVERY_S:g} s).",
        "",
        f"Unexpected answers: {report['unexpected']} (5xx other than 503/504: "
        f"{report['server_errors_other_than_503_504']}).",
    ]
    lines += [f"- {example}" for example in report["unexpected_examples"]]
    lines += ["", "![load](load.png)", ""]
    return "\n".join(lines)


def write_plot(path: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (latency, memory) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for kind in EXPECTED:
        points = [
            o for o in report["outcomes"] if o["kind"] == kind and isinstance(o["status"], int)
        ]
        if points:
            latency.scatter(
                [o["t"] for o in points], [o["ms"] for o in points], s=8, alpha=0.6, label=kind
            )
    latency.set_yscale("log")
    latency.set_ylabel("latency (ms)")
    latency.set_title("latency by request start time")
    latency.legend(fontsize=8, markerscale=2)
    samples = report["rss_mb"]["samples"]
    memory.plot([t for t, _ in samples], [mb for _, mb in samples], marker=".")
    memory.set_ylabel("app RSS (MB)")
    memory.set_xlabel("seconds into the run")
    for ax in (latency, memory):
        ax.axvline(report["timing"]["warmup_s"], color="grey", linestyle=":", label="warm-up ends")
        ax.axvline(report["timing"]["duration_s"], color="grey", linestyle="--", label="load ends")
    memory.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
