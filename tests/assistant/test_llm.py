"""The OpenAI-compatible client: what it sends (the schema as structured outputs), what it reads
(whole and streamed), and how each failure surfaces (unavailable → 503, timeout → 504)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import httpx2  # the HTTP library openai sends its requests with
import pytest
from fastapi.testclient import TestClient

from assistant.api.main import create_app
from assistant.api.services import DeadlineLLM, build_services
from assistant.llm import (
    MAX_LLM_TIMEOUT_S,
    ChatMessage,
    LLMError,
    LLMTimeoutError,
    LLMUnavailableError,
    OpenAICompatibleLLM,
)
from ingest.embed import Embedder
from scholia.settings import LLMSettings, Settings
from tests.assistant.api.conftest import configured
from tests.eval.fake_openai import fake_openai

MESSAGES = [ChatMessage("system", "Answer from the sources."), ChatMessage("user", "Question?")]
PRODIFF_Q = "How many iterations does ProDiff need to synthesize high-fidelity mel-spectrograms?"
SCHEMA = {"type": "object", "properties": {"claims": {"type": "array"}}, "required": ["claims"]}
Handler = Callable[[httpx2.Request], Coroutine[None, None, httpx2.Response]]


def client_for(url: str, **settings: Any) -> OpenAICompatibleLLM:
    return OpenAICompatibleLLM(url, LLMSettings(model="fake-judge", **settings))


def mocked(handler: Handler, **settings: Any) -> OpenAICompatibleLLM:
    """The client as configured, its HTTP answered by `handler` instead of a server."""
    llm = client_for("http://llm.test/v1", **settings)
    transport = httpx2.MockTransport(handler)
    llm.client = llm.client.with_options(http_client=httpx2.AsyncClient(transport=transport))
    return llm


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_a_completion_sends_the_schema_as_structured_outputs() -> None:
    with fake_openai('  {"claims": []}  ') as server:
        llm = client_for(server.url, temperature=0.3)
        completion = asyncio.run(llm.complete(MESSAGES, max_tokens=50, schema=SCHEMA))
        asyncio.run(llm.complete(MESSAGES, max_tokens=50))
    constrained, free = server.requests
    assert constrained["structured_outputs"] == {"json": SCHEMA}
    assert constrained["messages"] == [
        {"role": "system", "content": "Answer from the sources."},
        {"role": "user", "content": "Question?"},
    ]
    assert (constrained["model"], constrained["max_tokens"]) == ("fake-judge", 50)
    assert constrained["temperature"] == 0.3 and not constrained.get("stream")
    assert not {"structured_outputs", "response_format", "guided_json"} & set(free)
    assert completion.text == '{"claims": []}'  # stripped
    assert (completion.prompt_tokens, completion.completion_tokens) == (10, 5)
    assert completion.model == "fake-judge"


def test_a_stream_yields_the_content_pieces_in_order() -> None:
    with fake_openai("ProDiff needs only 2 iterations [1].") as server:
        llm = client_for(server.url)

        async def read() -> list[str]:
            return [piece async for piece in llm.stream(MESSAGES, 50, schema=SCHEMA)]

        pieces = asyncio.run(read())
    assert pieces == ["ProDiff ", "needs ", "only ", "2 ", "iterations ", "[1]. "]
    [request] = server.requests
    assert request["stream"] is True and request["structured_outputs"] == {"json": SCHEMA}


def test_the_context_window_is_the_servers_and_is_asked_once() -> None:
    calls: list[str] = []

    async def models(request: httpx2.Request) -> httpx2.Response:
        calls.append(request.url.path)
        cards = [
            {"id": "other", "object": "model", "max_model_len": 999},
            {"id": "fake-judge", "object": "model", "max_model_len": 8192},
        ]
        return httpx2.Response(200, json={"object": "list", "data": cards})

    llm = mocked(models)
    assert asyncio.run(llm.context_window()) == 8192
    assert asyncio.run(llm.context_window()) == 8192
    assert calls == ["/v1/models"]


def test_without_a_reported_window_the_configured_one_is_used() -> None:
    async def models(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json={"object": "list", "data": [{"id": "fake-judge"}]})

    assert asyncio.run(mocked(models, max_model_len=2048).context_window()) == 2048


def test_the_timeout_is_the_configured_one_or_the_backstop() -> None:
    assert client_for("http://llm.test/v1", timeout_s=7.5).client.timeout == 7.5
    assert client_for("http://llm.test/v1").client.timeout == MAX_LLM_TIMEOUT_S


def status(code: int) -> Handler:
    async def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(code, json={"error": {"message": f"status {code}"}})

    return answer


def raising(error: type[httpx2.TransportError]) -> Handler:
    async def answer(request: httpx2.Request) -> httpx2.Response:
        raise error("no answer", request=request)

    return answer


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (status(503), LLMUnavailableError),
        (status(500), LLMUnavailableError),
        (raising(httpx2.ConnectError), LLMUnavailableError),
        (raising(httpx2.ReadTimeout), LLMTimeoutError),
    ],
    ids=["503", "500", "refused", "read timeout"],
)
def test_failures_are_told_apart(handler: Handler, expected: type[LLMError]) -> None:
    llm = mocked(handler)

    async def stream() -> list[str]:
        return [piece async for piece in llm.stream(MESSAGES, 50)]

    with pytest.raises(expected):
        asyncio.run(llm.complete(MESSAGES, 50))
    with pytest.raises(expected):
        asyncio.run(stream())
    with pytest.raises(expected):
        asyncio.run(llm.context_window())
    assert asyncio.run(llm.ping()) is False


def test_a_refused_request_is_an_error_but_not_unavailable() -> None:
    with pytest.raises(LLMError, match=r"refused the request \(400\)") as raised:
        asyncio.run(mocked(status(400)).complete(MESSAGES, 50))
    assert not isinstance(raised.value, LLMUnavailableError | LLMTimeoutError)


def test_an_unreachable_server_is_unavailable_and_fails_ping() -> None:
    llm = client_for(f"http://127.0.0.1:{unused_port()}/v1", timeout_s=5)
    with pytest.raises(LLMUnavailableError, match="unreachable"):
        asyncio.run(llm.complete(MESSAGES, 50))
    assert asyncio.run(llm.ping()) is False


def test_the_deadline_bounds_a_server_that_never_answers() -> None:
    async def hang(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(30)
        return httpx2.Response(200)

    deadline = DeadlineLLM(mocked(hang), timeout_s=0.2)
    with pytest.raises(LLMTimeoutError, match=r"within 0\.2 s"):
        asyncio.run(deadline.complete(MESSAGES, 50))


def test_ask_is_503_with_the_sources_when_the_llm_is_unreachable(
    indexed_settings: Settings, embedder: Embedder
) -> None:
    url = f"http://127.0.0.1:{unused_port()}/v1"
    settings = configured(indexed_settings, {"url": url, "timeout_s": 5})
    services = build_services(settings, embedder=embedder)
    assert isinstance(services.llm.inner, OpenAICompatibleLLM)
    with TestClient(create_app(settings, services)) as client:
        response = client.post("/ask", json={"question": PRODIFF_Q})
    assert response.status_code == 503, response.text
    body = response.json()
    assert "unreachable" in body["detail"]
    assert body["sources"] and body["sources"][0]["title"].startswith("ProDiff")
