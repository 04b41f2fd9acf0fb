"""Concurrent clients against a running Scholia (loopback only): `scholia eval load` (/ask, /search
and refused requests, one role per client, else all would wait on /ask) and `scholia eval
concurrency` (/ask beside its identical prompts sent straight to the LLM server)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import openai
import psutil
from httpx_sse import EventSource
from openai.types.chat import ChatCompletion

from eval import harness
from eval.harness import Panel, progress, stats, write_benchmark
from scholia.settings import Settings

Log = Callable[[str], None]
# One request: sent `t` s into the run, `kind`, `status` (or the client-side error, e.g.
# "ReadTimeout"), `ms`, `unexpected` (why it counts against the app, "" when fine), `warmup`.
Outcome = dict[str, Any]
MIX = {"ask": 0.25, "search": 0.5, "bad": 0.25}  # the shares of the clients' roles (sum 1)
ASK, SEARCH, EMPTY_QUESTION = "ask", "search", "empty question"
OVERSIZED_BODY, MALFORMED_JSON = "oversized body", "malformed JSON"
BAD_KINDS = (EMPTY_QUESTION, OVERSIZED_BODY, MALFORMED_JSON)
# kind → (route, the status it must get)
EXPECTED = {ASK: ("/ask", 200), SEARCH: ("/search", 200), EMPTY_QUESTION: ("/ask", 422)}
EXPECTED |= {OVERSIZED_BODY: ("/ask", 413), MALFORMED_JSON: ("/search", 422)}
TOLERATED_ASK_STATUSES = {503, 504}  # load shedding, LLM trouble: an answer, not a fault
SAMPLE_EVERY_S, SETTLE_S = 2.0, 2.0  # RSS; the wait after the last answer before "after"
MAX_RATE_LIMIT_RETRIES = 5


def client_roles(clients: int) -> list[str]:
    """Each client's role ("ask", "search" or "bad"), in the shares of MIX, at least one each."""
    if clients < len(MIX):
        raise ValueError(f"need at least {len(MIX)} clients for the mix {MIX}")
    counts = {role: max(1, round(clients * share)) for role, share in MIX.items()}
    counts[max(counts, key=lambda role: counts[role])] += clients - sum(counts.values())
    return [role for role, count in counts.items() for _ in range(count)]


def app_pid_for(url: str) -> int:
    """The process listening on the URL's port (the app, for its RSS)."""
    port = urlparse(url).port or 80
    for connection in psutil.net_connections(kind="tcp"):
        listening = connection.status == psutil.CONN_LISTEN and connection.laddr
        if listening and connection.laddr.port == port and connection.pid:
            return int(connection.pid)
    raise RuntimeError(f"no process of this user listens on port {port}; pass --pid")


def judge(kind: str, status: int, body: bytes) -> str:
    """Why this answer counts against the app ("" when it is what it should be)."""
    wanted = EXPECTED[kind][1]
    if status == wanted and kind in BAD_KINDS:
        with contextlib.suppress(ValueError, AttributeError):
            if isinstance(detail := json.loads(body).get("detail"), str) and detail:
                return ""
        return f"{status} without a JSON detail"
    if status == wanted or (kind == ASK and status in TOLERATED_ASK_STATUSES):
        return ""
    return f"{status}, expected {wanted}: {body[:160].decode('utf-8', 'replace')}"


def _group(outcomes: list[Outcome]) -> dict[str, Any]:
    """Requests, throughput (until its last answer: an /ask may end minutes after the load),
    latency and statuses of one kind or route."""
    window = max(o["t"] + o["ms"] / 1000 for o in outcomes)
    latency = stats([o["ms"] for o in outcomes if isinstance(o["status"], int)], 1)
    return {
        "requests": len(outcomes),
        "per_s": round(len(outcomes) / window, 3) if window > 0 else 0.0,
        "latency_ms": {key: latency[key] for key in ("p50", "p95", "p99", "max")},
        "statuses": dict(sorted(Counter(str(o["status"]) for o in outcomes).items())),
        "unexpected": sum(bool(o["unexpected"]) for o in outcomes),
    }


def summarize(outcomes: list[Outcome], rss: list[tuple[float, float]], timing: dict) -> dict:
    """All requests, and by kind (each with its route); unexpected answers; the app's RSS."""
    kinds = {
        k: [o for o in outcomes if o["kind"] == k] for k in sorted({o["kind"] for o in outcomes})
    }
    by_kind = {k: _group(group) | {"route": EXPECTED[k][0]} for k, group in kinds.items()}
    errors = [o["status"] for o in outcomes if isinstance(o["status"], int) and o["status"] >= 500]
    after_warmup = next((mb for t, mb in rss if t >= timing["warmup_s"]), None)
    rss_mb = {"before": rss[0][1], "after_warmup": after_warmup, "after": rss[-1][1]}
    rss_mb["peak_during"] = max(mb for t, mb in rss if t <= timing["duration_s"])
    if after_warmup is not None:
        rss_mb["growth_after_warmup"] = round(rss[-1][1] - after_warmup, 1)
    per_s = round(len(outcomes) / timing["wall_s"], 3)
    examples = [f"{o['kind']}: {o['unexpected']}" for o in outcomes if o["unexpected"]]
    return {**_group(outcomes), "by_kind": by_kind, "per_s": per_s} | {
        "unexpected_examples": examples[:20],
        "server_errors_other_than_503_504": sum(status not in {503, 504} for status in errors),
        "rss_mb": rss_mb | {"samples": rss},
    }


def _http_client(headers: dict[str, str], connections: int, timeout_s: float, url: str = "") -> Any:
    limits = httpx.Limits(max_connections=connections + 4, max_keepalive_connections=None)
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout_s, limits=limits)


@dataclass
class LoadTest:
    """`settings` (default: from the environment): the app's API key, body limit, LLM deadline."""

    url: str
    clients: int = 32
    duration_s: float = 60.0
    warmup_s: float = 15.0
    pid: int | None = None
    settings: Settings = field(default_factory=Settings)
    seed: int = 8
    request_timeout_s: float | None = None
    progress: bool | None = False
    log: Log = print

    def __post_init__(self) -> None:
        self.url = harness.check_loopback(self.url)
        if self.duration_s <= 0 or not 0 <= self.warmup_s < self.duration_s:
            raise ValueError("need duration > 0 and 0 ≤ warmup < duration")
        self.roles, self.questions = client_roles(self.clients), harness.dev_questions()
        self.timeout_s: float = self.request_timeout_s or self.settings.llm.deadline_s + 60
        self.oversize_bytes = self.settings.server.max_body_bytes + 1024
        self.outcomes: list[Outcome] = []
        self.headers = harness.auth_headers(self.settings)

    async def request(self, client: Any, kind: str, rng: random.Random) -> tuple[int, bytes]:
        question, json_type = rng.choice(self.questions), {"content-type": "application/json"}
        if kind == OVERSIZED_BODY:
            return await asyncio.to_thread(self.post_oversized, self.headers | json_type)
        requests: dict[str, dict[str, Any]] = {
            ASK: {"json": {"question": question, "stream": False}},
            SEARCH: {"json": {"query": question, "top_k": 5}},
            EMPTY_QUESTION: {"json": {"question": ""}},
            MALFORMED_JSON: {"content": b'{"query": "diffusion", "top_k": ', "headers": json_type},
        }
        response = await client.post(EXPECTED[kind][0], **requests[kind])
        return response.status_code, response.content

    def post_oversized(self, headers: dict[str, str]) -> tuple[int, bytes]:
        """/ask with a body over the limit, by http.client: the server replies (413) before
        reading the body and closes; httpx marks the connection broken once the write fails and
        never reads the 413; http.client ignores the failed write, then reads the answer."""
        body = b'{"question": "' + b"x" * self.oversize_bytes + b'"}'
        connection = http.client.HTTPConnection(urlparse(self.url).netloc, timeout=self.timeout_s)
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                connection.request("POST", "/ask", body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    async def client(self, index: int, client: Any, start: float, bar: Any) -> None:
        rng = random.Random(self.seed * 1000 + index)
        while (began := time.monotonic() - start) < self.duration_s:
            kind = rng.choice(BAD_KINDS) if self.roles[index] == "bad" else self.roles[index]
            tick = time.perf_counter()
            status: int | str
            try:
                status, body = await self.request(client, kind, rng)
                verdict = judge(kind, status, body)
            except (httpx.HTTPError, OSError, http.client.HTTPException) as error:
                status = type(error).__name__
                verdict = f"client error {status}: {error}"
            ms = (time.perf_counter() - tick) * 1000
            outcome = {"t": began, "kind": kind, "status": status, "ms": ms}
            self.outcomes.append(outcome | {"unexpected": verdict, "warmup": began < self.warmup_s})
            bar.update()
            if verdict:
                bar.set_postfix(unexpected=sum(bool(o["unexpected"]) for o in self.outcomes))

    async def load(self, pid: int) -> tuple[list[tuple[float, float]], float]:
        """Load until `duration_s`, await the requests in flight; RSS sampled all along."""
        process, rss, start = psutil.Process(pid), list[tuple[float, float]](), time.monotonic()

        def sample() -> None:
            mb = round(process.memory_info().rss / 2**20, 1)
            rss.append((round(time.monotonic() - start, 2), mb))

        async def sampling() -> None:
            while True:
                sample()
                await asyncio.sleep(SAMPLE_EVERY_S)

        sampler = asyncio.create_task(sampling())
        with progress(self.progress, desc="load", unit=" answers") as bar:
            async with _http_client(self.headers, self.clients, self.timeout_s, self.url) as http:
                clients = [self.client(i, http, start, bar) for i in range(self.clients)]
                await asyncio.gather(*clients)
        wall_s = time.monotonic() - start
        await asyncio.sleep(SETTLE_S)
        sampler.cancel()
        sample()  # after: every answer is in
        return rss, round(wall_s, 3)

    def run(self, out_dir: Path) -> dict[str, Any]:
        report = harness.begin(url=self.url, pid=self.pid or app_pid_for(self.url))
        self.log(f"load: {self.clients} clients for {self.duration_s:g} s against {self.url}")
        rss, wall_s = asyncio.run(self.load(report["pid"]))
        timing = {"duration_s": self.duration_s, "warmup_s": self.warmup_s, "wall_s": wall_s}
        report |= {"clients": self.clients, "roles": dict(Counter(self.roles)), "timing": timing}
        report |= {"oversize_bytes": self.oversize_bytes, "request_timeout_s": self.timeout_s}
        self.outcomes.sort(key=lambda o: o["t"])
        report |= summarize(self.outcomes, rss, timing) | {"seed": self.seed}
        report["outcomes"] = self.outcomes
        write_benchmark(out_dir, "load", report, load_panels(report), every_s=SAMPLE_EVERY_S)
        return report


def load_panels(report: dict[str, Any]) -> list[Panel]:
    """Latency of each request by its start time, and the app's RSS, with the phases marked."""
    answered = [o for o in report["outcomes"] if isinstance(o["status"], int)]
    latency = {
        kind: ([o["t"] for o in points], [o["ms"] for o in points])
        for kind in EXPECTED
        if (points := [o for o in answered if o["kind"] == kind])
    }
    timing, samples = report["timing"], report["rss_mb"]["samples"]
    marks = {"warm-up ends": timing["warmup_s"], "load ends": timing["duration_s"]}
    rss = {"RSS (MB)": ([t for t, _ in samples], [mb for _, mb in samples])}
    return [
        Panel("latency by start time", "scatter", latency, ylabel="ms", log_y=True, marks=marks),
        Panel("app RSS", "line", rss, xlabel="seconds into the run", marks=marks),
    ]


async def read_answer(response: Any, stream: bool) -> tuple[float | None, dict[str, Any]]:
    """When /ask's first `token` event came (None unstreamed), and its JSON or `final` event."""
    if not stream:
        return None, json.loads(await response.aread())
    first = None
    async for event in EventSource(response).aiter_sse():  # SSEError: not an event stream
        if event.event == "token" and first is None:
            first = time.perf_counter()
        elif event.event == "error":
            raise RuntimeError(f"/ask stream failed: {event.data.strip()[:200]}")
        elif event.event == "final":
            return first, event.json()
    return first, {}


@dataclass
class Concurrency:
    """`stream`: both sides streamed, their time to first token measured too (`eval perf`)."""

    app_url: str
    llm_url: str
    levels: list[int]
    questions: int = 8
    model: str | None = None
    settings: Settings = field(default_factory=Settings)
    services: Any = None
    requests_per_level: int | None = None
    time_cap_s: float = 600.0
    log: Log = print
    stream: bool = False

    def __post_init__(self) -> None:
        from assistant.api.services import build_services

        self.app_url, self.llm_url = self.app_url.rstrip("/"), self.llm_url.rstrip("/")
        if not self.levels or min(self.levels) < 1:
            raise ValueError(f"levels must be positive integers, got {self.levels}")
        self.services = self.services or build_services(self.settings)
        llm, self.timeout_s = self.settings.llm, self.settings.llm.deadline_s * 2
        self.raw_model, key = self.model or llm.model, llm.api_key.get_secret_value()
        self.raw_llm = openai.AsyncOpenAI(
            base_url=self.llm_url, api_key=key, timeout=self.timeout_s, max_retries=0
        )
        self.prompts: list[tuple[str, Any]] = []  # (question, the messages /ask sends for it)
        self.left_out = 0  # questions declined before generation: they never reach the LLM
        self.asked_ms: list[float] = []  # each /ask, the warm-up first, in the order answered
        self.deadline, self.headers = 0.0, harness.auth_headers(self.settings)

    async def prepare_prompts(self) -> None:
        """The messages /ask sends the LLM for each question, but for those declined before."""
        from assistant.generate import answer_messages
        from assistant.llm import as_openai_messages
        from assistant.schemas import AskRequest

        asked = harness.dev_questions(self.questions, answerable=True)
        for question in asked:
            prepared = await self.services.assistant.prepare(AskRequest(question=question))
            if prepared.confident:
                messages = answer_messages(prepared.question, prepared.packed)
                self.prompts.append((question, as_openai_messages(messages)))
        if not self.prompts:
            raise RuntimeError("none of the questions reaches the LLM (each would be declined)")
        self.left_out = len(asked) - len(self.prompts)

    async def scholia(self, client: Any, index: int) -> dict[str, Any]:
        body = {"question": self.prompts[index % len(self.prompts)][0], "stream": self.stream}
        for retries in range(MAX_RATE_LIMIT_RETRIES + 1):
            tick = time.perf_counter()
            async with client.stream("POST", f"{self.app_url}/ask", json=body) as response:
                if response.status_code != 429 or retries == MAX_RATE_LIMIT_RETRIES:
                    response.raise_for_status()
                    first, answer = await read_answer(response, self.stream)
                    break
            # the server's rate limiter, not the pipeline: wait, resend
            await asyncio.sleep(min(float(response.headers.get("retry-after", 1)), 30))
        end = time.perf_counter()
        self.asked_ms.append((end - tick) * 1000)
        outcome = {"ms": self.asked_ms[-1], "ttft_ms": ((first or end) - tick) * 1000}
        return outcome | {"retries": retries, **answer.get("usage", {})}

    async def raw(self, client: Any, index: int, max_tokens: int = 0) -> dict[str, Any]:
        """The same prompt straight to the LLM server, with /ask's max_tokens and temperature."""
        llm, tick = self.settings.llm, time.perf_counter()
        first: float | None = None
        extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if self.stream else {}
        reply = await self.raw_llm.chat.completions.create(
            model=self.raw_model,
            messages=self.prompts[index % len(self.prompts)][1],
            max_tokens=max_tokens or llm.max_answer_tokens,
            temperature=llm.temperature,
            stream=self.stream,
            **extra,
        )
        usage = getattr(reply, "usage", None)
        if not isinstance(reply, ChatCompletion):
            async for chunk in reply:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter()
                usage = chunk.usage or usage
        end = time.perf_counter()
        return {
            "ttft_ms": ((first or end) - tick) * 1000,
            "ms": (end - tick) * 1000,
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
        }

    async def level(self, call: Callable, client: Any, level: int, count: int) -> dict[str, Any]:
        """`count` calls through `level` concurrent workers; none starts after the deadline."""
        outcomes, errors, queue = list[dict[str, Any]](), list[str](), iter(range(count))

        async def worker() -> None:
            for index in queue:
                try:
                    if time.monotonic() > self.deadline:
                        raise TimeoutError("not sent: time cap reached")
                    outcomes.append(await call(client, index))
                except Exception as error:
                    errors.append(f"{type(error).__name__}: {str(error)[:200]}")

        tick = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(level)))
        wall_s = time.perf_counter() - tick
        figures = ("prompt_tokens", "completion_tokens") + ("ttft_ms",) * self.stream
        return {
            "requests": count,
            "ok": len(outcomes),
            "errors": errors,
            "rate_limit_retries": sum(o.get("retries", 0) for o in outcomes),
            "wall_s": round(wall_s, 3),
            "answers_per_s": round(len(outcomes) / wall_s, 3),
            "latency_ms": stats([o["ms"] for o in outcomes]),
            **{key: stats([o.get(key, 0) for o in outcomes]) for key in figures},
        }

    async def measure(self) -> list[dict[str, Any]]:
        """The identical prompts; each level through both sides, alternating which goes first."""
        await self.prepare_prompts()
        self.deadline = time.monotonic() + self.time_cap_s
        rows: list[dict[str, Any]] = []
        async with _http_client(self.headers, max(self.levels), self.timeout_s) as client:
            # Not timed: the HTTP paths, and every prompt once into the LLM's prefix cache, so
            # that neither side profits from the other having run first.
            self.log(f"concurrency: warm-up ({len(self.prompts)} prompts)")
            await self.scholia(client, 0)
            for index in range(len(self.prompts)):
                await self.raw(client, index, max_tokens=1)
            for position, level in enumerate(self.levels):
                if time.monotonic() > self.deadline:
                    rows.append({"level": level, "skipped": "time cap reached"})
                    continue
                count = self.requests_per_level or max(4, 2 * level)
                self.log(f"concurrency: level {level}, {count} requests each")
                sides = [("scholia", self.scholia), ("raw", self.raw)][:: -1 if position % 2 else 1]
                row = {n: await self.level(c, client, level, count) for n, c in sides}
                s, r = row["scholia"], row["raw"]
                ratio = harness.ratio(s, r, "answers_per_s")
                ratios = harness.ratios(s["latency_ms"], r["latency_ms"])
                if self.stream:
                    ratios |= harness.ratios(s["ttft_ms"], r["ttft_ms"], "ratio_ttft")
                rows.append({"level": level, **row, "ratio_answers_per_s": ratio, **ratios})
        return rows

    def run(self, out_dir: Path) -> dict[str, Any]:
        for url in (self.app_url, self.llm_url):
            harness.check_loopback(url)
        llm, levels = self.settings.llm, asyncio.run(self.measure())
        report = harness.begin(app_url=self.app_url, llm_url=self.llm_url, model=self.raw_model)
        report |= {"questions": len(self.prompts), "questions_left_out": self.left_out}
        report |= {"max_tokens": llm.max_answer_tokens, "temperature": llm.temperature}
        report |= {"time_cap_s": self.time_cap_s, "levels": levels}
        write_benchmark(out_dir, "concurrency", report, concurrency_panels(report))
        return report


def concurrency_panels(report: dict[str, Any]) -> list[Panel]:
    """Throughput and p95 latency by concurrency level: Scholia /ask beside the raw LLM."""
    rows = [row for row in report["levels"] if "skipped" not in row]
    levels = [row["level"] for row in rows]
    throughput, p95 = {}, {}
    clients = "concurrent clients"
    for label, side in (("Scholia /ask", "scholia"), ("raw LLM", "raw")):
        throughput[label] = (levels, [row[side]["answers_per_s"] for row in rows])
        p95[label] = (levels, [row[side]["latency_ms"]["p95"] for row in rows])
    return [
        Panel("throughput (answers/s)", "line", throughput, xlabel=clients, log_x=True),
        Panel("p95 latency (ms)", "line", p95, xlabel=clients, log_x=True),
    ]
