"""The FastAPI app: /ask, /search, operations routes, and the Gradio UI at /ui."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse

from assistant.api.routes import ask, health, search
from assistant.api.services import Services, build_services
from assistant.llm import LLMTimeoutError
from assistant.pipeline import AnswerUnavailableError
from assistant.settings import Settings, get_settings
from ingest.store import IndexMismatchError, StoreUnavailableError

log = logging.getLogger("scholia.api")


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is None:
            app.state.services = build_services(settings)
        yield

    app = FastAPI(
        title="Scholia",
        summary="Cited answers from a collection of research papers.",
        version="0.1.0",
        lifespan=lifespan,
    )
    if services is not None:
        app.state.services = services
    app.include_router(ask.router)
    app.include_router(search.router)
    app.include_router(health.router)
    _install_error_handlers(app)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    from assistant.ui import mount_ui

    mount_ui(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        messages = [
            f"{'.'.join(str(part) for part in item['loc'] if part != 'body') or 'body'}: {item['msg']}"
            for item in error.errors()
        ]
        return JSONResponse(
            {"detail": "; ".join(messages) or "invalid request", "errors": messages},
            status_code=422,
        )

    @app.exception_handler(AnswerUnavailableError)
    async def unavailable(_: Request, error: AnswerUnavailableError) -> JSONResponse:
        status = 504 if isinstance(error.error, LLMTimeoutError) else 503
        return JSONResponse(
            {
                "detail": str(error),
                "sources": [source.model_dump() for source in error.sources],
            },
            status_code=status,
        )

    @app.exception_handler(ValueError)
    async def bad_value(_: Request, error: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(StoreUnavailableError)
    async def store_down(_: Request, error: StoreUnavailableError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=503)

    @app.exception_handler(IndexMismatchError)
    async def mismatch(_: Request, error: IndexMismatchError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse({"detail": f"internal error ({type(error).__name__})"}, status_code=500)
