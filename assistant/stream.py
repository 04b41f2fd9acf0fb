"""The streamed path of a question: sources → draft tokens as the LLM writes them → the verified answer.

`Assistant.prepare()` runs first (condense, retrieve, pack), so failures there surface as
ordinary errors before anything is streamed. Then:

1. `SourcesEvent`: the sources the answer will be written from (none marked cited yet);
2. `TokenEvent`s: the DRAFT's claims as the LLM writes them (the text inside its JSON reply);
3. `FinalEvent`: `Assistant.respond()`'s verified `AskResponse`, the same object `POST /ask`
   returns. Verification may drop unsupported sentences or decline, so the final answer can
   differ from the concatenated draft tokens: the final object is the authority.

Usage in streaming mode: completion tokens = chunks received (vLLM sends one token per chunk);
prompt tokens are estimated with the packing tokenizer, since the stream reports no usage.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from assistant.generate import answer_messages, claims_text, generate_stream
from assistant.llm import ChatMessage, LLMError
from assistant.pack import count_tokens
from assistant.pipeline import AnswerUnavailableError, Assistant, Prepared
from assistant.schemas import AskResponse, Source


@dataclass(frozen=True)
class SourcesEvent:
    question: str
    sources: list[Source]


@dataclass(frozen=True)
class TokenEvent:
    text: str


@dataclass(frozen=True)
class FinalEvent:
    response: AskResponse
    draft: str


StreamEvent = SourcesEvent | TokenEvent | FinalEvent


async def stream_answer(assistant: Assistant, prepared: Prepared) -> AsyncIterator[StreamEvent]:
    """Raises `AnswerUnavailableError` (with the sources) if the LLM fails mid-stream."""
    yield SourcesEvent(prepared.question, assistant.sources_of(prepared))
    parts: list[str] = []
    if prepared.confident:
        messages = answer_messages(prepared.analysis.text, prepared.packed)
        started = time.perf_counter()
        tokens = generate_stream(
            assistant.llm,
            messages,
            assistant.settings.llm.max_answer_tokens,
            assistant.schema(prepared),
        )
        shown = ""
        try:
            async for token in tokens:
                parts.append(token)
                text = claims_text("".join(parts))
                if len(text) > len(shown) and text.startswith(shown):
                    yield TokenEvent(text[len(shown) :])
                    shown = text
        except LLMError as error:
            raise AnswerUnavailableError(error, assistant.sources_of(prepared)) from error
        finally:
            await _close(tokens)
        prepared.timings.generate = round((time.perf_counter() - started) * 1000, 2)
        prepared.prompt_tokens += estimate_prompt_tokens(messages)
        prepared.completion_tokens += len(parts)
    draft = "".join(parts)
    yield FinalEvent(await assistant.respond(prepared, draft), draft)


def estimate_prompt_tokens(messages: list[ChatMessage]) -> int:
    return sum(count_tokens(message.content) for message in messages)


async def _close(iterator: AsyncIterator[str]) -> None:
    """Close the LLM stream (so the server stops generating) when the client goes away."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):  # runs even while the request is being cancelled
            await aclose()
