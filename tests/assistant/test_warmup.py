"""Warm-up and the engine's measured speed: the deadline and the "cannot finish" guard."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from assistant.api.main import create_app
from assistant.api.services import build_services
from assistant.generate import prompt_tokens
from assistant.llm import ChatMessage, Completion
from assistant.warmup import STARTUP_LOG, Calibration, calibrate
from ingest.embed import Embedder
from scholia.settings import Settings
from tests.assistant.api.conftest import configured
from tests.fakes import FakeLLM

PREFILL_TOKENS_S = 2000.0  # the simulated engine: 0.5 ms per prompt token
DECODE_TOKENS_S = 100.0  # 10 ms a token: long beside a busy timer's few ms of overshoot


class TimedLLM(FakeLLM):
    """A fake engine whose first token costs prompt tokens / PREFILL_TOKENS_S, then streams
    at DECODE_TOKENS_S."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    async def stream(
        self, messages: list[ChatMessage], max_tokens: int, schema: Any = None
    ) -> AsyncIterator[str]:
        self.requests += 1
        await asyncio.sleep(prompt_tokens(messages) / PREFILL_TOKENS_S)
        for _ in range(max_tokens):
            yield "word "
            await asyncio.sleep(1 / DECODE_TOKENS_S)

    async def complete(
        self, messages: list[ChatMessage], max_tokens: int, schema: Any = None
    ) -> Completion:
        text = "".join([piece async for piece in self.stream(messages, max_tokens)])
        return Completion(text, prompt_tokens(messages), max_tokens, self.model)


def _long_messages() -> list[ChatMessage]:
    return [ChatMessage("system", "rules " * 50), ChatMessage("user", "evidence " * 1500)]


def test_calibrate_measures_prefill_and_decode_rates() -> None:
    calibration = asyncio.run(calibrate(TimedLLM(), _long_messages()))
    # It errs slow (the whole time to the first token, for the tokens the cache cannot serve),
    # never fast; and within timer and scheduling noise on a busy machine.
    assert PREFILL_TOKENS_S / 3 < calibration.prefill_tokens_s <= PREFILL_TOKENS_S
    assert DECODE_TOKENS_S / 3 < calibration.decode_tokens_s < DECODE_TOKENS_S * 1.5
    assert calibration.long_prompt_tokens >= prompt_tokens(_long_messages())
    assert calibration.first_token_long_s > calibration.first_token_short_s


def test_deadline_follows_the_slowest_answer_the_budget_allows() -> None:
    slow = Calibration(50.0, 2.5, 1.0, 14.0, 700, 30.0)
    assert slow.seconds_for(700, 100) == 700 / 50 + 100 / 2.5
    assert slow.timeout_for(700, 100) == 2 * (14 + 40) + 10
    fast = Calibration(5000.0, 100.0, 0.1, 0.2, 700, 1.0)
    assert fast.timeout_for(700, 100) == 30.0  # never below the floor


def test_serve_warms_up_measures_and_refuses_what_cannot_finish(
    indexed_settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    settings = configured(indexed_settings, {"max_answer_tokens": 32}).model_copy(
        update={"data_dir": tmp_path}
    )
    llm = TimedLLM()
    services = build_services(indexed_settings, llm=llm, embedder=embedder)
    services.settings = settings
    app = create_app(settings, services, warm_up=True, engine={"dtype": "float32"})
    with TestClient(app, raise_server_exceptions=False) as client:
        checks = client.get("/ready").json()["checks"]["llm"]
        measured = checks["measured"]
        assert measured["prefill_tokens_s"] > 0 and measured["decode_tokens_s"] > 0
        assert checks["engine"] == {"dtype": "float32"}
        assert checks["deadline_s"] == services.llm.timeout_s >= 30
        assert client.post("/ask", json={"question": "What does ProDiff do?"}).status_code == 200
        # An engine 1000x slower than measured now: a prompt that cannot finish is not sent.
        assert services.llm.calibration is not None
        services.llm.calibration = Calibration(0.5, 0.1, 1.0, 1.0, 10, 1.0)
        sent = llm.requests
        response = client.post("/ask", json={"question": "What does ProDiff do?"})
        assert response.status_code == 504, response.text
        body = response.json()
        assert "Not sent" in body["detail"] and body["sources"], body
        assert llm.requests == sent
    entry = json.loads((tmp_path / "logs" / STARTUP_LOG).read_text().splitlines()[-1])
    assert entry["warm_up_s"] > 0 and entry["measured"]["prefill_tokens_s"] > 0


def test_an_unreachable_llm_at_start_is_logged_not_fatal(
    indexed_settings: Settings, embedder: Embedder
) -> None:
    llm = FakeLLM()
    llm.down = True
    services = build_services(indexed_settings, llm=llm, embedder=embedder)
    with TestClient(create_app(indexed_settings, services, warm_up=True)) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["llm"]["measured"] is None
        assert client.get("/health").status_code == 200
