"""Every failure becomes a JSON answer with a readable `detail`; no stack trace ever leaves."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from assistant.llm import LLMTimeoutError
from assistant.pipeline import AnswerUnavailableError
from ingest.pipeline import IngestLockedError
from ingest.store import IndexMismatchError, StoreUnavailableError

log = logging.getLogger("scholia.api")


def unavailable_status(error: AnswerUnavailableError) -> int:
    return 504 if isinstance(error.error, LLMTimeoutError) else 503


def unavailable_kind(error: AnswerUnavailableError) -> str:
    return "llm_timeout" if isinstance(error.error, LLMTimeoutError) else "llm_unavailable"


def unavailable_body(error: AnswerUnavailableError) -> dict[str, object]:
    return {
        "detail": str(error),
        "sources": [source.model_dump(mode="json") for source in error.sources],
    }


def validation_messages(error: RequestValidationError) -> list[str]:
    messages = []
    for item in error.errors():
        if item.get("type") == "json_invalid":
            position = item["loc"][-1] if item.get("loc") else "?"
            reason = (item.get("ctx") or {}).get("error", "")
            messages.append(f"body: invalid JSON at character {position}: {reason}".rstrip(": "))
            continue
        where = ".".join(str(part) for part in item["loc"] if part != "body") or "body"
        messages.append(f"{where}: {item['msg']}")
    return messages


def body_error_detail(error: BaseException | None) -> str | None:
    """FastAPI answers any body it cannot decode with a generic 400; say why."""
    if isinstance(error, UnicodeDecodeError):
        return f"The request body is not valid UTF-8 ({error.reason} at byte {error.start})."
    if isinstance(error, RecursionError):
        return "The request body's JSON is nested too deeply."
    return None


def install_error_handlers(app: FastAPI) -> None:
    def count(request: Request, kind: str) -> None:
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.error(kind)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        count(request, "validation")
        messages = validation_messages(error)
        return JSONResponse(
            {"detail": "; ".join(messages) or "invalid request", "errors": messages},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code >= 500:
            count(request, "internal")
        elif error.status_code == 400:
            count(request, "bad_request")
        detail = error.detail if isinstance(error.detail, str) else str(error.detail)
        if error.status_code == 400:
            detail = body_error_detail(error.__cause__) or detail
        return JSONResponse(
            {"detail": detail}, status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(AnswerUnavailableError)
    async def unavailable(request: Request, error: AnswerUnavailableError) -> JSONResponse:
        count(request, unavailable_kind(error))
        return JSONResponse(unavailable_body(error), status_code=unavailable_status(error))

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, error: ValueError) -> JSONResponse:
        count(request, "validation")
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(IngestLockedError)
    async def locked(request: Request, error: IngestLockedError) -> JSONResponse:
        count(request, "ingest_locked")
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.exception_handler(StoreUnavailableError)
    async def store_down(request: Request, error: StoreUnavailableError) -> JSONResponse:
        count(request, "store_unavailable")
        return JSONResponse({"detail": f"The index is unavailable: {error}"}, status_code=503)

    @app.exception_handler(IndexMismatchError)
    async def mismatch(request: Request, error: IndexMismatchError) -> JSONResponse:
        count(request, "index_mismatch")
        return JSONResponse({"detail": str(error)}, status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        # Counted as "internal" by the metrics middleware; the trace goes to the log only.
        log.exception("unhandled error")
        return JSONResponse({"detail": f"internal error ({type(error).__name__})"}, status_code=500)
