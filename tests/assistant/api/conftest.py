from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from assistant.api.main import create_app
from assistant.api.services import build_services
from assistant.llm import LLM
from ingest.embed import Embedder
from scholia.settings import Settings
from tests.fakes import FakeLLM

AppFactory = Callable[..., TestClient]


def configured(settings: Settings, llm: dict[str, Any] | None = None, **server: Any) -> Settings:
    """A copy of `settings` with some `server` (and `llm`) fields changed."""
    update: dict[str, Any] = {"server": settings.server.model_copy(update=server)}
    if llm:
        update["llm"] = settings.llm.model_copy(update=llm)
    return settings.model_copy(update=update)


@pytest.fixture
def make_client(
    indexed_settings: Settings, embedder: Embedder, fake_llm: FakeLLM
) -> Iterator[AppFactory]:
    """A TestClient on an app with other server/LLM settings (and optionally another fake LLM)."""
    clients: list[TestClient] = []

    def make(
        llm: LLM | None = None, llm_settings: dict[str, Any] | None = None, **server: Any
    ) -> TestClient:
        settings = configured(indexed_settings, llm_settings, **server)
        services = build_services(settings, llm=llm or fake_llm, embedder=embedder)
        client = TestClient(create_app(settings, services), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """(event name, decoded data) for each event of an SSE body ("message" when unnamed)."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        payload = "\n".join(data)
        events.append((name, payload if payload == "[DONE]" else json.loads(payload)))
    return events
