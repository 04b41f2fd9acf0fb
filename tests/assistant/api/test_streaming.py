"""SSE /ask: sources → draft tokens → the final (verified) response; errors in-band."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi.testclient import TestClient

from assistant.api.main import create_app
from assistant.api.services import build_services
from assistant.llm import ChatMessage, Completion, LLMUnavailableError
from ingest.embed import Embedder
from scholia.settings import Settings
from tests.assistant.api.conftest import AppFactory, configured, parse_sse
from tests.assistant.api.live import serve
from tests.fakes import FakeLLM

PRODIFF_Q = "How many iterations does ProDiff need to synthesize high-fidelity mel-spectrograms?"


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    """The response without what is measured rather than decided: timings and the prompt-token
    count (a stream reports no usage, so streaming estimates prompt tokens)."""
    body = dict(body)
    body.pop("timings_ms")
    body["usage"] = {"completion_tokens": body["usage"]["completion_tokens"]}
    return body


def stream(client: TestClient, payload: dict[str, Any], **headers: str) -> list[tuple[str, Any]]:
    with client.stream("POST", "/ask", json=payload, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_sse(response.read().decode())


def test_events_arrive_in_order_and_final_equals_the_json_response(client: TestClient) -> None:
    plain = client.post("/ask", json={"question": PRODIFF_Q}).json()
    events = stream(client, {"question": PRODIFF_Q, "stream": True})
    names = [name for name, _ in events]
    assert names[0] == "sources" and names[-1] == "final"
    assert set(names[1:-1]) == {"token"} and len(names) > 3
    final = events[-1][1]
    assert comparable(final) == comparable(plain)
    assert not final["declined"] and final["citations"]
    # The sources event lists what the answer is written from, before verification marks cites.
    first = events[0][1]
    assert first["question"] == plain["question"]
    assert {s["id"] for s in first["sources"]} == {s["id"] for s in final["sources"]}
    assert not any(s["cited"] for s in first["sources"])
    draft = "".join(data["text"] for name, data in events if name == "token")
    # The verifier may tidy citation placement ("steps [1]." → "steps. [1]"); same words.
    assert re.sub(r"\W", "", draft) == re.sub(r"\[\d+\]|\W", "", final["answer"])
    assert final["timings_ms"]["generate"] > 0 and final["usage"]["prompt_tokens"] > 0


def test_accept_header_alone_asks_for_a_stream(client: TestClient) -> None:
    events = stream(client, {"question": PRODIFF_Q}, accept="text/event-stream")
    assert [events[0][0], events[-1][0]] == ["sources", "final"]


def test_final_is_the_verified_answer_even_when_the_draft_said_more(
    client: TestClient, fake_llm: FakeLLM
) -> None:
    fake_llm.reply = (
        "ProDiff needs only 2 iterations to synthesize high-fidelity mel-spectrograms [1]. "
        "ProDiff reaches an FID of 3.7 on ImageNet [1]."
    )
    plain = client.post("/ask", json={"question": PRODIFF_Q}).json()
    events = stream(client, {"question": PRODIFF_Q, "stream": True})
    draft = "".join(data["text"] for name, data in events if name == "token")
    final = events[-1][1]
    assert "ImageNet" in draft and "ImageNet" not in final["answer"]
    assert final["unsupported"] == [1]
    assert comparable(final) == comparable(plain)


class BreaksMidStream(FakeLLM):
    async def stream(
        self, messages: list[ChatMessage], max_tokens: int, schema: Any = None
    ) -> AsyncIterator[str]:
        yield "ProDiff "
        yield "needs "
        raise LLMUnavailableError("connection to the LLM lost")


class Slow(FakeLLM):
    async def complete(
        self, messages: list[ChatMessage], max_tokens: int, schema: Any = None
    ) -> Completion:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    async def stream(
        self, messages: list[ChatMessage], max_tokens: int, schema: Any = None
    ) -> AsyncIterator[str]:
        yield "ProDiff "
        await asyncio.sleep(30)


def test_llm_failure_mid_stream_ends_with_an_error_event_with_sources(
    make_client: AppFactory,
) -> None:
    client = make_client(llm=BreaksMidStream())
    events = stream(client, {"question": PRODIFF_Q, "stream": True})
    assert [name for name, _ in events] == ["sources", "token", "token", "error"]
    error = events[-1][1]
    assert error["status"] == 503 and "lost" in error["detail"]
    assert error["sources"][0]["title"].startswith("ProDiff")
    metrics = client.get("/metrics").text
    assert 'scholia_errors_total{kind="llm_unavailable"} 1.0' in metrics


def test_llm_down_before_the_stream_starts_is_a_plain_503(
    client: TestClient, fake_llm: FakeLLM
) -> None:
    fake_llm.down = True
    response = client.post("/ask", json={"question": PRODIFF_Q, "stream": True})
    assert response.status_code == 503
    assert response.json()["sources"][0]["title"].startswith("ProDiff")


def test_llm_timeout_is_504_as_json_and_as_a_stream_error(make_client: AppFactory) -> None:
    client = make_client(llm=Slow(), llm_settings={"timeout_s": 0.3})
    response = client.post("/ask", json={"question": PRODIFF_Q})
    assert response.status_code == 504, response.text
    assert "0.3 s" in response.json()["detail"] and response.json()["sources"]
    events = stream(client, {"question": PRODIFF_Q, "stream": True})
    assert [name for name, _ in events] == ["sources", "token", "error"]
    assert events[-1][1]["status"] == 504


class Endless(FakeLLM):
    """Writes forever until closed; records that the server closed it."""

    def __init__(self) -> None:
        super().__init__()
        self.closed_flag = False

    async def stream(
        self, messages: list[ChatMessage], max_tokens: int, schema: Any = None
    ) -> AsyncIterator[str]:
        try:
            while True:
                yield "more "
                await asyncio.sleep(0.02)
        finally:
            self.closed_flag = True


def test_a_client_that_hangs_up_stops_the_generation(
    indexed_settings: Settings, embedder: Embedder
) -> None:
    llm = Endless()
    settings = configured(indexed_settings)
    app = create_app(settings, build_services(settings, llm=llm, embedder=embedder))
    with serve(app) as url, httpx.Client(timeout=30) as http:
        payload = {"question": PRODIFF_Q, "stream": True}
        with http.stream("POST", f"{url}/ask", json=payload) as response:
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith("event: ")) == "event: sources"
            assert next(line for line in lines if line.startswith("event: ")) == "event: token"
        deadline = time.monotonic() + 10
        while not llm.closed_flag and time.monotonic() < deadline:
            time.sleep(0.05)
    assert llm.closed_flag
