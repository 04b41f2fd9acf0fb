"""Access control, limits and failure modes of the HTTP API (issue 5 §3–4, issue 8's hostile input)."""

from __future__ import annotations

import hmac
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from assistant.api import middleware
from assistant.api.main import api_key_of
from assistant.api.metrics import Metrics
from scholia.settings import ServerSettings, Settings
from tests.assistant.api.conftest import AppFactory
from tests.fakes import FakeLLM, states

PRODIFF_Q = "How many iterations does ProDiff need to synthesize high-fidelity mel-spectrograms?"
KEY = "s3cret-key-for-tests"
PROTECTED = [
    ("POST", "/ask", {"question": PRODIFF_Q}),
    ("POST", "/search", {"query": "diffusion"}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("GET", "/v1/models", None),
    ("GET", "/ready", None),
    ("GET", "/metrics", None),
    ("GET", "/openapi.json", None),
    ("GET", "/docs", None),
]


@pytest.fixture
def keyed(make_client: AppFactory) -> TestClient:
    return make_client(api_key=SecretStr(KEY))


@pytest.mark.parametrize(("method", "path", "payload"), PROTECTED)
def test_every_route_but_health_needs_the_api_key(
    keyed: TestClient, method: str, path: str, payload: dict[str, object] | None
) -> None:
    for headers, detail in (
        ({}, "Missing API key"),
        ({"Authorization": "Bearer wrong"}, "Invalid API key"),
        ({"Authorization": f"Bearer {KEY}x"}, "Invalid API key"),
        ({"Authorization": f"Basic {KEY}"}, "Invalid API key"),
    ):
        response = keyed.request(method, path, json=payload, headers=headers)
        assert response.status_code == 401, (path, headers)
        assert response.json()["detail"].startswith(detail)
        assert response.headers["www-authenticate"] == "Bearer"
    ok = keyed.request(method, path, json=payload, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200, (path, ok.text)


def test_health_and_the_root_redirect_need_no_key(keyed: TestClient) -> None:
    assert keyed.get("/health").json() == {"status": "ok"}
    assert keyed.get("/", follow_redirects=False).status_code in {302, 307}


def test_the_ui_asks_for_the_key_on_its_login_page(keyed: TestClient) -> None:
    assert keyed.get("/ui/config").status_code == 401
    refused = keyed.post("/ui/login", data={"username": "me", "password": "wrong"})
    assert refused.status_code == 400
    assert keyed.post("/ui/login", data={"username": "me", "password": KEY}).status_code == 200
    assert keyed.get("/ui/config").status_code == 200  # session cookie from the login


def test_the_key_is_compared_in_constant_time(
    keyed: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(middleware.hmac, "compare_digest", spy)
    assert keyed.get("/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert compared == [(b"nope", KEY.encode())]


def test_the_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHOLIA_SERVER_API_KEY", "from-env")
    assert api_key_of(Settings()) == "from-env"
    monkeypatch.delenv("SCHOLIA_SERVER_API_KEY")
    monkeypatch.setenv("SCHOLIA_API_KEY", "issue-name")
    assert api_key_of(Settings()) == "issue-name"
    monkeypatch.setenv("SCHOLIA_API_KEY", "  ")
    assert api_key_of(Settings()) is None


def test_defaults_bind_loopback_with_cors_closed_and_no_key() -> None:
    server = ServerSettings()
    assert server.host == "127.0.0.1"
    assert server.cors_origins == [] and server.api_key is None


def test_cors_is_closed_by_default_also_for_the_ui(client: TestClient) -> None:
    origin = {"Origin": "http://evil.example"}
    preflight = {**origin, "Access-Control-Request-Method": "POST"}
    for path in ("/ask", "/ui/config"):
        response = client.options(path, headers=preflight)
        assert "access-control-allow-origin" not in response.headers, path
    assert "access-control-allow-origin" not in client.get("/health", headers=origin).headers
    assert "access-control-allow-origin" not in client.get("/ui/config", headers=origin).headers


def test_cors_opens_to_configured_origins_only(make_client: AppFactory) -> None:
    client = make_client(cors_origins=["http://good.example"])
    good = client.get("/health", headers={"Origin": "http://good.example"})
    assert good.headers["access-control-allow-origin"] == "http://good.example"
    evil = client.get("/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in evil.headers


def test_oversized_bodies_get_413_with_a_json_detail(make_client: AppFactory) -> None:
    client = make_client(max_body_bytes=4096)
    big = b'{"question": "' + b"x" * 5000 + b'"}'
    declared = client.post("/ask", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert "4096" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
        yield big[:3000]
        yield big[3000:]

    chunked = client.post("/ask", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413 and chunked.json()["detail"]
    assert client.post("/ask", json={"question": PRODIFF_Q}).status_code == 200
    assert 'scholia_errors_total{kind="body_too_large"} 2.0' in client.get("/metrics").text


def test_hostile_bodies_get_4xx_with_a_message_and_the_server_carries_on(
    client: TestClient,
) -> None:
    json_type = {"content-type": "application/json"}
    cases = [
        (b'{"question": "caf\xe9 \xff\xfe"}', "not valid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"question": ' * 5000 + b'"x"' + b"}" * 5000, "nested too deeply"),
        (b"{not json", "invalid JSON at character 1"),
        (b'{"question": "q", "top_k": 1e999}', "top_k"),
    ]
    for body, expected in cases:
        response = client.post("/ask", content=body, headers=json_type)
        assert 400 <= response.status_code < 500, (body[:40], response.status_code)
        assert expected in response.json()["detail"], response.json()
    long = client.post("/ask", json={"question": "why " * 25_000})
    assert long.status_code == 422 and "4000" in long.json()["detail"]
    controls = client.post("/ask", json={"question": "\x00\x07\x1b\u202e\ufeff\t"})
    assert controls.status_code == 422 and "empty" in controls.json()["detail"]
    noisy = client.post(
        "/ask",
        json={
            "question": "\x00How many iterations does ProDiff\x07 need to synthesize high-fidelity\x1b mel-spectrograms?"
        },
    )
    assert noisy.status_code == 200 and states(noisy.json()["answer"], "2")
    assert client.get("/health").status_code == 200


def test_rate_limit_answers_429_with_retry_after(make_client: AppFactory) -> None:
    client = make_client(rate_limit_per_minute=6, rate_limit_burst=3)
    statuses = [client.get("/v1/models").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = client.get("/v1/models")
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert "per minute" in limited.json()["detail"]
    for probe in ("/health", "/ready", "/metrics"):
        assert all(client.get(probe).status_code == 200 for _ in range(5)), probe
    assert client.get("/ui/").status_code == 200  # page loads are not counted


def test_token_bucket_refills_per_client() -> None:
    limiter = middleware.RateLimitMiddleware(app=None, per_minute=60, burst=2, metrics=Metrics())  # type: ignore[arg-type]
    assert [limiter.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 1.0]
    assert limiter.take("b", 0.0) == 0.0  # another client has its own bucket
    assert limiter.take("a", 0.5) == pytest.approx(0.5)  # half a token regained, half to go
    assert limiter.take("a", 1.0) == 0.0


def test_an_unexpected_error_is_a_500_without_a_trace(
    make_client: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client()

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals /etc/passwd")

    retriever = client.app.state.services.assistant.retriever  # type: ignore[attr-defined]
    monkeypatch.setattr(retriever, "search", explode)
    response = client.post("/search", json={"query": "diffusion"})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error (RuntimeError)"}
    assert 'scholia_errors_total{kind="internal"} 1.0' in client.get("/metrics").text


class UnreachableCollection:
    """A Chroma collection whose server went away: every call is refused."""

    def __getattr__(self, name: str) -> object:
        def refuse(*args: object, **kwargs: object) -> None:
            raise httpx.ConnectError("[Errno 111] Connection refused")

        return refuse


def test_an_unreachable_index_is_a_503_naming_the_index_not_a_500(
    make_client: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client()
    store = client.app.state.services.store  # type: ignore[attr-defined]
    monkeypatch.setattr(store, "_collection", UnreachableCollection())
    for path, payload in (
        ("/ask", {"question": PRODIFF_Q}),
        ("/ask", {"question": PRODIFF_Q, "stream": True}),
        ("/search", {"query": "diffusion"}),
    ):
        response = client.post(path, json=payload)
        assert response.status_code == 503, (path, payload, response.text)
        detail = response.json()["detail"]
        assert detail.startswith("The index is unavailable: ") and "Connection refused" in detail
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["problems"][0].startswith("index unavailable: ")
    assert 'scholia_errors_total{kind="store_unavailable"} 3.0' in client.get("/metrics").text


def test_metrics_count_requests_stages_tokens_and_errors(client: TestClient) -> None:
    assert client.post("/ask", json={"question": PRODIFF_Q}).status_code == 200
    assert client.post("/ask", json={"question": ""}).status_code == 422
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in (
        'scholia_http_requests_total{method="POST",route="/ask",status="200"} 1.0',
        'scholia_http_requests_total{method="POST",route="/ask",status="422"} 1.0',
        'scholia_http_request_duration_seconds_count{method="POST",route="/ask"} 2.0',
        "scholia_retrieval_seconds_count 1.0",
        "scholia_generation_seconds_count 1.0",
        'scholia_answers_total{channel="ask",outcome="answered"} 1.0',
        'scholia_errors_total{kind="validation"} 1.0',
    ):
        assert line in text, line
    completion = next(
        line
        for line in text.splitlines()
        if line.startswith('scholia_llm_tokens_total{kind="completion"}')
    )
    assert float(completion.split()[-1]) > 0


def test_ready_says_what_is_not_ready(client: TestClient, fake_llm: FakeLLM) -> None:
    ready = client.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] and body["problems"] == []
    assert body["checks"]["index"]["ok"] and body["checks"]["index"]["chunks"] > 0
    assert body["checks"]["llm"] == {
        "ok": True,
        "model": "fake-llm",
        "deadline_s": 120.0,
        "engine": None,  # no supervised vLLM
        "measured": None,  # no warm-up
    }
    fake_llm.down = True
    down = client.get("/ready")
    assert down.status_code == 503
    assert down.json()["problems"] == ["LLM unreachable (fake-llm)"]
    assert client.get("/health").status_code == 200


def test_openapi_documents_the_stream_and_the_docs_page_loads(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    ask = schema["paths"]["/ask"]["post"]
    assert "text/event-stream" in ask["responses"]["200"]["content"]
    assert "event: final" in ask["description"] or "`final`" in ask["description"]
    assert {"/v1/chat/completions", "/v1/models", "/metrics", "/ready", "/health"} <= set(
        schema["paths"]
    )
    assert client.get("/docs").status_code == 200
