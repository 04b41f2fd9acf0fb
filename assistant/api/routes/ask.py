from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response

from assistant.api.deps import AssistantDep, MetricsDep
from assistant.api.errors import unavailable_body, unavailable_kind, unavailable_status
from assistant.api.metrics import Metrics
from assistant.api.sse import event_stream, sse
from assistant.pipeline import AnswerUnavailableError, Assistant, Prepared
from assistant.schemas import AskRequest, AskResponse, ErrorResponse
from assistant.stream import FinalEvent, SourcesEvent, TokenEvent, stream_answer

router = APIRouter(tags=["answers"])
log = logging.getLogger("scholia.api")

STREAM_DESCRIPTION = """\
With `"stream": true` or `Accept: text/event-stream`: Server-Sent Events, in this order:

* `event: sources` — `{"question": …, "sources": [Source, …]}`: what the answer is written from;
* `event: token` (repeated) — `{"text": …}`: the draft answer as the LLM writes it;
* `event: final` — the complete response object, exactly the JSON `/ask` returns. The answer in
  it is the VERIFIED answer: sentences the sources do not support are removed (or the question
  declined), so it can differ from the concatenated draft tokens. Treat `final` as the authority.
* `event: error` — instead of `final` when the LLM fails mid-stream:
  `{"status": 503|504, "detail": …, "sources": […]}`.

Failures before the first event (bad input, index down) are ordinary JSON errors."""


@router.post(
    "/ask",
    response_model=AskResponse,
    responses={
        200: {
            "description": "The answer (JSON), or an event stream (see below).",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        503: {"model": ErrorResponse, "description": "The LLM or the index is unavailable."},
        504: {"model": ErrorResponse, "description": "The LLM did not answer in time."},
    },
    description="Answer a question from the papers, citing the sources it used as [n].\n\n"
    + STREAM_DESCRIPTION,
)
async def ask(
    body: AskRequest, request: Request, assistant: AssistantDep, metrics: MetricsDep
) -> Response | AskResponse:
    if body.stream or "text/event-stream" in request.headers.get("accept", ""):
        prepared = await assistant.prepare(body)
        return event_stream(ask_events(assistant, prepared, metrics))
    response = await assistant.ask(body)
    metrics.observe_answer(response, "ask")
    return response


async def ask_events(
    assistant: Assistant, prepared: Prepared, metrics: Metrics
) -> AsyncIterator[str]:
    try:
        async for event in stream_answer(assistant, prepared):
            if isinstance(event, SourcesEvent):
                sources = [source.model_dump(mode="json") for source in event.sources]
                yield sse({"question": event.question, "sources": sources}, "sources")
            elif isinstance(event, TokenEvent):
                yield sse({"text": event.text}, "token")
            elif isinstance(event, FinalEvent):
                metrics.observe_answer(event.response, "stream")
                yield sse(event.response.model_dump(mode="json"), "final")
    except AnswerUnavailableError as error:
        metrics.error(unavailable_kind(error))
        yield sse({"status": unavailable_status(error), **unavailable_body(error)}, "error")
    except Exception as error:  # the 200 is already sent: report in-band, never a trace
        log.exception("stream failed")
        metrics.error("internal")
        yield sse({"status": 500, "detail": f"internal error ({type(error).__name__})"}, "error")
