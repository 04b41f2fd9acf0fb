"""Pure ASGI middleware: metrics, API key, per-client rate limit, request body limit.

Pure ASGI (not `BaseHTTPMiddleware`) so streamed responses pass through untouched.
Order, outermost first (see `install_middleware`): metrics → CORS → rate limit → API key →
body limit → the app.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from collections import OrderedDict
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assistant.api.metrics import Metrics
from scholia.settings import ServerSettings

# Routes anyone may call even when an API key is set. /health says only "the process is up";
# "/" is a redirect; /ui has its own login (Gradio's, password = the API key).
PUBLIC_PATHS = frozenset({"/health", "/"})
UI_PREFIX = "/ui"
MAX_TRACKED_CLIENTS = 10_000
# Operational probes (load balancers, Prometheus) are never rate-limited.
UNCOUNTED_PATHS = frozenset({"/health", "/ready", "/metrics"})
# Bodies that carry papers (the API's and the UI's uploads): `server.max_upload_bytes`.
UPLOAD_PATHS = frozenset({"/papers", UI_PREFIX + "/gradio_api/upload"})


async def send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((key.lower().encode(), value.encode()) for key, value in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


def route_label(scope: Scope) -> str:
    """A bounded label: the route template (`/ask`), `/ui` for the whole UI, else `unmatched`."""
    path = str(scope.get("path", ""))
    if path == UI_PREFIX or path.startswith(UI_PREFIX + "/"):
        return UI_PREFIX
    route = scope.get("route")
    template = getattr(route, "path", None)
    return template if isinstance(template, str) else "unmatched"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_status)
        except Exception:
            status = 500
            self.metrics.error("internal")
            raise
        except BaseException:
            status = 499  # the client went away (cancelled), nginx's convention
            raise
        finally:
            self.metrics.in_flight.dec()
            route, method = route_label(scope), str(scope.get("method", ""))
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)


class BodyLimitMiddleware:
    """Reads the body up to `max_bytes` before the app sees it; more → 413 with a JSON detail.
    Paper uploads (`UPLOAD_PATHS`) may be up to `upload_bytes` instead."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, metrics: Metrics, upload_bytes: int | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_bytes = upload_bytes or max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS"}:
            await self.app(scope, receive, send)
            return
        limit = self.upload_bytes if scope.get("path") in UPLOAD_PATHS else self.max_bytes
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send, limit: int) -> None:
        self.metrics.error("body_too_large")
        await send_json(
            send,
            413,
            {"detail": f"Request body too large: the limit is {limit} bytes."},
            {"connection": "close"},
        )


class APIKeyMiddleware:
    """`Authorization: Bearer <key>` on every route except `PUBLIC_PATHS` and the UI."""

    def __init__(self, app: ASGIApp, api_key: str, metrics: Metrics) -> None:
        self.app = app
        self.key = api_key.encode()
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _public(scope):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, token = header.partition(" ")
        # compare_digest takes the same time whatever the position of the first wrong byte.
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.key):
            await self.app(scope, receive, send)
            return
        self.metrics.error("unauthorized")
        detail = (
            "Missing API key: send `Authorization: Bearer <key>`."
            if not header
            else "Invalid API key."
        )
        await send_json(send, 401, {"detail": detail}, {"www-authenticate": "Bearer"})


def _public(scope: Scope) -> bool:
    path = str(scope.get("path", ""))
    return path in PUBLIC_PATHS or path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


def check_ui_password(api_key: str) -> Any:
    """Gradio `auth` callable: any user name, the API key as password (constant-time)."""

    def check(_username: str, password: str) -> bool:
        return hmac.compare_digest(password.encode(), api_key.encode())

    return check


class TokenBucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class RateLimitMiddleware:
    """A token bucket per client address: `burst` at once, then `per_minute` sustained.

    Counted: every request except the probes (/health, /ready, /metrics) and the UI's page and
    asset loads (GET /ui/…); the UI's actions (POST /ui/…: asking, logging in) count.
    In-process, so per worker; keyed by the peer address, so behind a reverse proxy all clients
    share one bucket (rate-limit at the proxy there, or set the limit to 0).
    """

    def __init__(self, app: ASGIApp, per_minute: float, burst: int, metrics: Metrics) -> None:
        self.app = app
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.metrics = metrics
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._counted(scope):
            await self.app(scope, receive, send)
            return
        wait = self.take(_client(scope), time.monotonic())
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        self.metrics.error("rate_limited")
        retry_after = max(1, math.ceil(wait))
        await send_json(
            send,
            429,
            {
                "detail": f"Too many requests: at most {self.rate * 60:g} per minute per client "
                f"(bursts of {self.burst:g}). Retry in {retry_after} s."
            },
            {"retry-after": str(retry_after)},
        )

    def take(self, client: str, now: float) -> float:
        """Spend one token; 0 if allowed, else the seconds until a token is available."""
        bucket = self.buckets.pop(client, None) or TokenBucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        self.buckets[client] = bucket  # most recently used last
        while len(self.buckets) > MAX_TRACKED_CLIENTS:
            self.buckets.popitem(last=False)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    @staticmethod
    def _counted(scope: Scope) -> bool:
        path = str(scope.get("path", ""))
        if path in UNCOUNTED_PATHS:
            return False
        if path == UI_PREFIX or path.startswith(UI_PREFIX + "/"):
            return scope.get("method") == "POST"
        return True


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def install_middleware(
    app: FastAPI, server: ServerSettings, metrics: Metrics, api_key: str | None
) -> None:
    """`add_middleware` wraps from the inside out: the last one added runs first."""
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=server.max_body_bytes,
        metrics=metrics,
        upload_bytes=server.max_upload_bytes,
    )
    if api_key:
        app.add_middleware(APIKeyMiddleware, api_key=api_key, metrics=metrics)
    if server.rate_limit_per_minute > 0:
        app.add_middleware(
            RateLimitMiddleware,
            per_minute=server.rate_limit_per_minute,
            burst=server.rate_limit_burst,
            metrics=metrics,
        )
    # Always installed, even with no origins: CORS stays closed and Gradio, seeing the parent
    # app configure CORS, does not add its own (localhost-friendly) policy to /ui.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=server.cors_origins,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Accept"],
        allow_credentials=False,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
