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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from eval.harness import (
    Panel,
    auth_headers,
    check_loopback,
    describe_machine,
    dev_questions,
    now,
    stats,
    table,
    write_outputs,
)
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


def per_second(outcomes: list[Outcome]) -> float:
    """Throughput of one kind or route: its answers over the time until its last answer (a
    /search stops with the load, an /ask in flight may take minutes more)."""
    window = max((o.t + o.ms / 1000 for o in outcomes), default=0.0)
    return round(len(outcomes) / window, 3) if window > 0 else 0.0


def _statuses(outcomes: list[Outcome]) -> dict[str, int]:
    return dict(sorted(Counter(str(o.status) for o in outcomes).items()))


def summarize_kind(outcomes: list[Outcome]) -> dict[str, Any]:
    latency = stats([o.ms for o in outcomes if isinstance(o.status, int)], digits=1)
    route, status = EXPECTED[outcomes[0].kind]
    return {
        "route": route,
        "expected_status": status,
        "requests": len(outcomes),
        "per_s": per_second(outcomes),
        "latency_ms": {key: latency[key] for key in ("p50", "p95", "p99", "max")},
        "statuses": _statuses(outcomes),
        "unexpected": sum(bool(o.unexpected) for o in outcomes),
    }


def summarize(
    outcomes: list[Outcome], rss: list[tuple[float, float]], timing: dict[str, float]
) -> dict[str, Any]:
    """The report's figures: by kind, by route, overall statuses, unexpected answers, RSS."""
    wall_s = timing["wall_s"]
    kinds = {kind: [o for o in outcomes if o.kind == kind] for kind in EXPECTED}
    routes: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        routes.setdefault(EXPECTED[outcome.kind][0], []).append(outcome)
    unexpected = [o for o in outcomes if o.unexpected]
    server_errors = [
        o
        for o in outcomes
        if isinstance(o.status, int) and o.status >= 500 and o.status not in {503, 504}
    ]
    return {
        "requests": len(outcomes),
        "per_s": round(len(outcomes) / wall_s, 3) if wall_s > 0 else 0.0,
        "statuses": _statuses(outcomes),
        "by_kind": {kind: summarize_kind(group) for kind, group in kinds.items() if group},
        "by_route": {
            route: {
                "requests": len(group),
                "per_s": per_second(group),
                "statuses": _statuses(group),
            }
            for route, group in sorted(routes.items())
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
    growth = None if after is None or after_warmup is None else round(after - after_warmup, 1)
    return {
        "before": rss[0][1] if rss else None,
        "after_warmup": after_warmup,
        "peak_during": max(during) if during else None,
        "after": after,
        "growth_after_warmup": growth,
        "samples": [[round(t, 2), mb] for t, mb in rss],
    }


@dataclass
class LoadTest:
    """One run of the load: the clients, the RSS sampler, and what they recorded."""

    url: str
    clients: int
    duration_s: float
    warmup_s: float
    pid: int
    settings: Settings
    mix: Mapping[str, float]
    seed: int
    oversize_bytes: int
    request_timeout_s: float
    outcomes: list[Outcome] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        import psutil

        self.questions = dev_questions()
        self.roles = client_roles(self.clients, self.mix)
        self.headers = auth_headers(self.settings)
        self.process = psutil.Process(self.pid)
        self.start = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.start

    def sample_rss(self) -> None:
        self.rss.append((self.now(), round(self.process.memory_info().rss / MB, 1)))

    async def request(self, client: Any, kind: str, rng: random.Random) -> tuple[int, bytes]:
        json_type = {"content-type": "application/json"}
        if kind == OVERSIZED_BODY:
            body = b'{"question": "' + b"x" * self.oversize_bytes + b'"}'
            headers = {**self.headers, **json_type}
            return await asyncio.to_thread(
                post_answered_early, self.url, "/ask", body, headers, self.request_timeout_s
            )
        if kind == ASK:
            payload = {"question": rng.choice(self.questions), "stream": False}
            response = await client.post("/ask", json=payload)
        elif kind == SEARCH:
            response = await client.post(
                "/search", json={"query": rng.choice(self.questions), "top_k": 5}
            )
        elif kind == EMPTY_QUESTION:
            response = await client.post("/ask", json={"question": ""})
        else:
            malformed = b'{"query": "diffusion", "top_k": '
            response = await client.post("/search", content=malformed, headers=json_type)
        return response.status_code, response.content

    async def run_client(self, index: int, client: Any) -> None:
        import httpx

        rng = random.Random(self.seed * 1000 + index)
        role = self.roles[index]
        while self.now() < self.duration_s:
            kind = rng.choice(BAD_KINDS) if role == "bad" else role
            began, tick = self.now(), time.perf_counter()
            status: int | str
            try:
                status, body = await self.request(client, kind, rng)
                verdict = judge(kind, status, body)
            except (httpx.HTTPError, OSError, http.client.HTTPException) as error:
                status = type(error).__name__
                verdict = f"client error {status}: {error}"
            ms = (time.perf_counter() - tick) * 1000
            self.outcomes.append(Outcome(began, kind, status, ms, verdict, began < self.warmup_s))

    async def run(self, progress: bool, log: Callable[[str], None]) -> dict[str, float]:
        """Load until `duration_s`, await the requests in flight; sample RSS all along."""
        import httpx
        from tqdm import tqdm

        self.sample_rss()  # before: nothing sent yet
        limits = httpx.Limits(
            max_connections=self.clients + 4, max_keepalive_connections=self.clients + 4
        )
        bar = tqdm(total=round(self.duration_s), desc="load", unit="s", disable=not progress)
        async with httpx.AsyncClient(
            base_url=self.url, headers=self.headers, timeout=self.request_timeout_s, limits=limits
        ) as client:
            tasks = [asyncio.create_task(self.run_client(i, client)) for i in range(self.clients)]
            next_note = 10.0
            while not all(task.done() for task in tasks):
                await asyncio.sleep(min(SAMPLE_EVERY_S, 1.0))
                if self.now() - self.rss[-1][0] >= SAMPLE_EVERY_S - 0.05:
                    self.sample_rss()
                bar.n = min(round(self.now()), round(self.duration_s))
                unexpected = sum(bool(o.unexpected) for o in self.outcomes)
                bar.set_postfix(answers=len(self.outcomes), unexpected=unexpected)
                if not progress and self.now() >= next_note:
                    phase = (
                        "draining"
                        if self.now() >= self.duration_s
                        else f"{self.now():.0f}/{self.duration_s:.0f} s"
                    )
                    log(
                        f"load: {phase}, {len(self.outcomes)} answers, {self.rss[-1][1]:.0f} MB RSS"
                    )
                    next_note += 10.0
            for task in tasks:
                task.result()  # a bug in a client surfaces here, not as a quiet gap in the data
            wall_s = self.now()
        bar.close()
        await asyncio.sleep(SETTLE_S)
        self.sample_rss()  # after: every answer is in
        self.outcomes.sort(key=lambda o: o.t)
        return {
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "wall_s": round(wall_s, 3),
        }


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
    `pid`: the app's process (default: the one listening on the URL's port). `settings` (default:
    from the environment): the API key, the body size limit (the oversized body is 1 KiB over
    it), the LLM timeout (each request may take that plus a minute)."""
    url = check_loopback(url)
    if clients < 1 or duration_s <= 0 or not 0 <= warmup_s < duration_s:
        raise ValueError("need clients ≥ 1, duration > 0 and 0 ≤ warmup < duration")
    settings = settings or Settings()
    oversize_bytes = oversize_bytes or settings.server.max_body_bytes + 1024
    request_timeout_s = request_timeout_s or settings.llm.deadline_s + 60
    load = LoadTest(
        url,
        clients,
        duration_s,
        warmup_s,
        pid or app_pid_for(url),
        settings,
        mix,
        seed,
        oversize_bytes,
        request_timeout_s,
    )
    started = now()
    timing = asyncio.run(load.run(progress, log))
    report: dict[str, Any] = {
        "started": started,
        "finished": now(),
        "url": url,
        "pid": load.pid,
        "clients": clients,
        "roles": dict(Counter(load.roles)),
        "timing": timing,
        "oversize_bytes": oversize_bytes,
        "request_timeout_s": request_timeout_s,
        "seed": seed,
        "machine": describe_machine(),
        **summarize(load.outcomes, load.rss, timing),
        "outcomes": [asdict(o) for o in load.outcomes],
    }
    write_outputs(
        out_dir, {"load.json": report, "load.md": render(report), "load.png": panels(report)}
    )
    return report


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms"


def _mb(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} MB"


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{status}: {count}" for status, count in counts.items())


def render(report: dict[str, Any]) -> str:
    timing, machine, rss = report["timing"], report["machine"], report["rss_mb"]
    roles = ", ".join(f"{count} {role}" for role, count in report["roles"].items())
    rows = [
        [kind, row["route"], row["requests"], f"{row['per_s']:.2f}"]
        + [_ms(row["latency_ms"][key]) for key in ("p50", "p95", "p99", "max")]
        + [_counts(row["statuses"])]
        for kind, row in report["by_kind"].items()
    ]
    routes = "; ".join(
        f"{route} {row['requests']} ({row['per_s']:.2f}/s)"
        for route, row in report["by_route"].items()
    )
    return (
        f"# Scholia under load\n\n{report['started']} · {report['url']} (pid {report['pid']}) · "
        f"{machine.get('cpu')}, {machine.get('logical_cores')} cores · load average {machine.get('load_average')}\n\n"
        f"{report['clients']} concurrent clients ({roles}) for {timing['duration_s']:g} s, back to back; "
        f"then the requests in flight were awaited (all answered after {timing['wall_s']:.0f} s). req/s: "
        "answers of that kind ÷ the time until its last answer; latency from sending to the whole answer.\n\n"
        + table(
            ["kind", "route", "requests", "req/s", "p50", "p95", "p99", "max", "statuses"], rows
        )
        + f"\nAll: {report['requests']} requests, {report['per_s']:.2f}/s over {timing['wall_s']:.0f} s; "
        f"statuses {_counts(report['statuses'])}. By route: {routes}.\n\n"
        f"App RSS: before {_mb(rss['before'])}, after the {timing['warmup_s']:g} s warm-up "
        f"{_mb(rss['after_warmup'])}, peak during {_mb(rss['peak_during'])}, after {_mb(rss['after'])} "
        f"(sampled every {SAMPLE_EVERY_S:g} s).\n\n"
        f"Unexpected answers: {report['unexpected']} (5xx other than 503/504: "
        f"{report['server_errors_other_than_503_504']}).\n"
        + "".join(f"- {example}\n" for example in report["unexpected_examples"])
        + "\n![load](load.png)\n"
    )


def panels(report: dict[str, Any]) -> list[Panel]:
    """Latency of each request by its start time, and the app's RSS, with the phases marked."""
    answered = [o for o in report["outcomes"] if isinstance(o["status"], int)]
    latency = {
        kind: ([o["t"] for o in points], [o["ms"] for o in points])
        for kind in EXPECTED
        if (points := [o for o in answered if o["kind"] == kind])
    }
    samples = report["rss_mb"]["samples"]
    marks = {
        "warm-up ends": report["timing"]["warmup_s"],
        "load ends": report["timing"]["duration_s"],
    }
    return [
        Panel(
            "latency by request start time",
            "scatter",
            latency,
            ylabel="latency (ms)",
            log_y=True,
            marks=marks,
        ),
        Panel(
            "app RSS",
            "line",
            {"RSS (MB)": ([t for t, _ in samples], [mb for _, mb in samples])},
            xlabel="seconds into the run",
            marks=marks,
        ),
    ]
