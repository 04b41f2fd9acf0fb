"""An OpenAI-compatible facade: any OpenAI client can use Scholia as if it were a model.

`POST /v1/chat/completions`: the last user message is the question; earlier user/assistant
messages are the conversation history (system messages are ignored: Scholia's own rules hold).
The reply's content is the verified answer followed by a "Sources:" list of the cited papers;
the structured sources, citations and the full `/ask` object ride along as extra fields
(`sources`, `citations`, `declined`, `scholia`). Streaming sends the draft tokens as they come;
if verification changed the draft, a last chunk appends the verified answer (the authority),
then the sources list; the last chunk before `[DONE]` carries the extra fields.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assistant.api.deps import AssistantDep, MetricsDep
from assistant.api.errors import unavailable_kind, unavailable_status
from assistant.api.metrics import Metrics
from assistant.api.sse import event_stream, sse
from assistant.pipeline import AnswerUnavailableError, Assistant, Prepared
from assistant.schemas import AskRequest, AskResponse, Message, Source
from assistant.stream import FinalEvent, TokenEvent, stream_answer

router = APIRouter(prefix="/v1", tags=["openai-compatible"])
log = logging.getLogger("scholia.api")

MODEL_ID = "scholia"
MAX_HISTORY = 50


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64)
    text: str | None = Field(default=None, max_length=20_000)


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = Field(default=None, max_length=20_000)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's request; sampling options are accepted and ignored (Scholia is deterministic)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(default=MODEL_ID, max_length=256)
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=200)
    stream: bool = False
    stream_options: StreamOptions | None = None
    top_k: int | None = Field(
        default=None,
        ge=1,
        le=20,
        description="Scholia extension: sources to use. Default: the server's retrieval.top_k.",
    )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "scholia"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


STARTED = int(time.time())


@router.get("/models", response_model=ModelList)
async def models() -> ModelList:
    """The one model this server offers: `scholia` (cited answers from the papers)."""
    return ModelList(data=[ModelCard(id=MODEL_ID, created=STARTED)])


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, assistant: AssistantDep, metrics: MetricsDep
) -> Response:
    """OpenAI chat completions; the answer carries its citations and a sources list."""
    try:
        request = to_ask_request(body)
    except (ValidationError, ValueError) as error:
        metrics.error("validation")
        return openai_error(422, _validation_text(error), "invalid_request_error")
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    try:
        if body.stream:
            prepared = await assistant.prepare(request)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return event_stream(chunks(assistant, prepared, metrics, completion_id, include_usage))
        final = await assistant.ask(request)
    except AnswerUnavailableError as error:
        metrics.error(unavailable_kind(error))
        return openai_error(
            unavailable_status(error),
            str(error),
            "service_unavailable",
            sources=error.sources,
        )
    metrics.observe_answer(final, "openai")
    return JSONResponse(completion_object(completion_id, final))


def to_ask_request(body: ChatCompletionRequest) -> AskRequest:
    turns = [
        (message.role, _text(message.content))
        for message in body.messages
        if message.role in {"user", "assistant"}
    ]
    last_user = max((i for i, (role, _) in enumerate(turns) if role == "user"), default=None)
    if last_user is None:
        raise ValueError("messages: no user message to answer")
    question = turns[last_user][1]
    history = [
        Message(role="user" if role == "user" else "assistant", content=text)
        for role, text in turns[:last_user]
        if text.strip()
    ][-MAX_HISTORY:]
    return AskRequest(question=question, top_k=body.top_k, history=history)


def _text(content: str | list[ContentPart] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.text or "" for part in content if part.type == "text")


def content_of(response: AskResponse) -> str:
    return response.answer + sources_suffix(response)


def sources_suffix(response: AskResponse) -> str:
    cited = [source for source in response.sources if source.cited]
    if not cited:
        return ""
    lines = "\n".join(f"[{source.rank}] {source.title}" for source in cited)
    return f"\n\nSources:\n{lines}"


def extras(response: AskResponse) -> dict[str, Any]:
    return {
        "sources": [source.model_dump(mode="json") for source in response.sources],
        "citations": response.citations,
        "declined": response.declined,
        "scholia": response.model_dump(mode="json"),
    }


def usage_of(response: AskResponse) -> dict[str, int]:
    prompt, completion = response.usage.prompt_tokens, response.usage.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_object(completion_id: str, response: AskResponse) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL_ID,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content_of(response)},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage_of(response),
        **extras(response),
    }


def chunk_object(
    completion_id: str, delta: dict[str, Any], finish_reason: str | None = None
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": MODEL_ID,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }


def closing_text(draft: str, response: AskResponse) -> str:
    """What to append after the streamed draft so the reader ends with the verified answer."""
    if not draft.strip():
        return response.answer + sources_suffix(response)
    if response.answer.strip() == draft.strip():
        return sources_suffix(response)
    return (
        "\n\n---\nVerified answer (statements the sources do not support were removed):\n"
        + response.answer
        + sources_suffix(response)
    )


async def chunks(
    assistant: Assistant,
    prepared: Prepared,
    metrics: Metrics,
    completion_id: str,
    include_usage: bool,
) -> AsyncIterator[str]:
    yield sse(chunk_object(completion_id, {"role": "assistant", "content": ""}))
    try:
        async for event in stream_answer(assistant, prepared):
            if isinstance(event, TokenEvent):
                yield sse(chunk_object(completion_id, {"content": event.text}))
            elif isinstance(event, FinalEvent):
                response = event.response
                metrics.observe_answer(response, "openai")
                tail = closing_text(event.draft, response)
                if tail:
                    yield sse(chunk_object(completion_id, {"content": tail}))
                yield sse({**chunk_object(completion_id, {}, "stop"), **extras(response)})
                if include_usage:
                    usage_chunk = chunk_object(completion_id, {})
                    usage_chunk["choices"] = []
                    usage_chunk["usage"] = usage_of(response)
                    yield sse(usage_chunk)
    except AnswerUnavailableError as error:
        metrics.error(unavailable_kind(error))
        yield sse(
            {
                "error": {
                    "message": str(error),
                    "type": "service_unavailable",
                    "code": unavailable_status(error),
                }
            }
        )
    except Exception as error:
        log.exception("stream failed")
        metrics.error("internal")
        yield sse({"error": {"message": f"internal error ({type(error).__name__})", "code": 500}})
    yield sse("[DONE]")


def openai_error(
    status: int, message: str, kind: str, sources: list[Source] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {
        "error": {"message": message, "type": kind, "code": status},
        "detail": message,
    }
    if sources is not None:
        body["sources"] = [source.model_dump(mode="json") for source in sources]
    return JSONResponse(body, status_code=status)


def _validation_text(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}"
            for item in error.errors()
        )
    return str(error)
