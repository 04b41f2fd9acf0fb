"""`stream_answer`: the events' order and contents (the SSE encoding is tests/assistant/api)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from assistant.api.services import Services
from assistant.generate import answer_messages, claims_text
from assistant.llm import ChatMessage, LLMUnavailableError
from assistant.pipeline import AnswerUnavailableError, Assistant, Prepared
from assistant.schemas import AskRequest
from assistant.stream import (
    FinalEvent,
    SourcesEvent,
    StreamEvent,
    TokenEvent,
    estimate_prompt_tokens,
    stream_answer,
)
from tests.fakes import FakeLLM, states

PRODIFF_Q = "How many iterations does ProDiff need to synthesize high-fidelity mel-spectrograms?"


def prepare(assistant: Assistant, question: str) -> Prepared:
    return asyncio.run(assistant.prepare(AskRequest(question=question)))


def events_of(assistant: Assistant, prepared: Prepared) -> list[StreamEvent]:
    async def collect() -> list[StreamEvent]:
        return [event async for event in stream_answer(assistant, prepared)]

    return asyncio.run(collect())


def test_sources_then_the_draft_tokens_then_the_verified_answer(
    services: Services, fake_llm: FakeLLM
) -> None:
    assistant = services.assistant
    prepared = prepare(assistant, PRODIFF_Q)
    events = events_of(assistant, prepared)

    first, *tokens, final = events
    assert isinstance(first, SourcesEvent) and isinstance(final, FinalEvent)
    assert tokens and all(isinstance(token, TokenEvent) for token in tokens)
    assert first.question == PRODIFF_Q
    assert first.sources[0].title.startswith("ProDiff")
    assert not any(source.cited for source in first.sources)  # not known before verification

    assert "claims" in json.loads(final.draft)  # the raw reply, JSON
    streamed = "".join(token.text for token in tokens if isinstance(token, TokenEvent))
    assert streamed == claims_text(final.draft) and "{" not in streamed

    response = final.response
    assert not response.declined and states(response.answer, "2") and response.citations == [1]
    assert response.sources[0].cited and response.sources[0].title.startswith("ProDiff")
    messages = answer_messages(prepared.analysis.text, prepared.packed)
    assert response.usage.prompt_tokens == estimate_prompt_tokens(messages)
    assert response.usage.completion_tokens == len(re.findall(r"\S+\s*", final.draft))
    assert response.timings_ms.generate > 0


def test_without_a_confident_source_nothing_is_drafted(
    services: Services, fake_llm: FakeLLM
) -> None:
    assistant = services.assistant
    prepared = prepare(assistant, "How many iterations does ZorbNet need to synthesize speech?")
    assert not prepared.confident
    events = events_of(assistant, prepared)
    assert [type(event) for event in events] == [SourcesEvent, FinalEvent]
    final = events[-1]
    assert isinstance(final, FinalEvent) and final.draft == "" and final.response.declined
    assert fake_llm.calls == []


class FailingMidStream(FakeLLM):
    """Writes the start of a reply, then the server goes away."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    async def stream(
        self, messages: list[ChatMessage], max_tokens: int, schema: Any = None
    ) -> AsyncIterator[str]:
        try:
            yield '{"claims": [{"text": "ProDiff needs '
            raise LLMUnavailableError("connection reset")
        finally:
            self.closed = True


def test_an_llm_failure_mid_stream_raises_with_the_sources(services: Services) -> None:
    llm = FailingMidStream()
    assistant = Assistant(
        services.assistant.retriever, llm, services.assistant.verifier, services.settings
    )
    prepared = prepare(assistant, PRODIFF_Q)
    seen: list[StreamEvent] = []

    async def consume() -> None:
        async for event in stream_answer(assistant, prepared):
            seen.append(event)

    with pytest.raises(AnswerUnavailableError) as raised:
        asyncio.run(consume())
    assert [type(event) for event in seen] == [SourcesEvent, TokenEvent]
    assert seen[1] == TokenEvent("ProDiff needs ")
    assert raised.value.sources[0].title.startswith("ProDiff")
    assert llm.closed


class Endless(FakeLLM):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    async def stream(
        self, messages: list[ChatMessage], max_tokens: int, schema: Any = None
    ) -> AsyncIterator[str]:
        try:
            yield '{"claims": [{"text": "'
            while True:
                yield "more "
                await asyncio.sleep(0)
        finally:
            self.closed = True


def test_a_consumer_that_stops_closes_the_llm_stream(services: Services) -> None:
    llm = Endless()
    assistant = Assistant(
        services.assistant.retriever, llm, services.assistant.verifier, services.settings
    )
    prepared = prepare(assistant, PRODIFF_Q)

    async def read_three_tokens() -> None:
        events = stream_answer(assistant, prepared)
        tokens = 0
        async for event in events:
            tokens += isinstance(event, TokenEvent)
            if tokens == 3:
                break
        await events.aclose()  # type: ignore[attr-defined]

    asyncio.run(read_three_tokens())
    assert llm.closed
