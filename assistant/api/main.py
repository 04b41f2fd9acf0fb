"""The FastAPI app: /ask, /search, /papers, /v1 (OpenAI-compatible), operations routes, the UI
at /ui.

Access (all off-switchable through `ServerSettings`, env `SCHOLIA_SERVER_*`):
* binds 127.0.0.1 unless told otherwise (`scholia serve --host`);
* API key (`SCHOLIA_SERVER_API_KEY`, or `SCHOLIA_API_KEY`): `Authorization: Bearer <key>` on
  every route except /health and the `/` redirect; the UI at /ui asks for it on a login page
  (any user name, the key as password) and then holds a session cookie;
* per-client token-bucket rate limit (429 + Retry-After), request body limit (413),
  CORS closed unless `cors_origins` lists origins.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from assistant.api.errors import install_error_handlers
from assistant.api.metrics import Metrics
from assistant.api.middleware import install_middleware
from assistant.api.routes import ask, health, openai_compat, papers, search
from assistant.api.services import Services, build_services
from assistant.warmup import StartupSteps, longest_prompt_tokens, warm_up_path
from scholia.offline import apply_offline_env
from scholia.settings import Settings, get_settings

log = logging.getLogger("scholia.api")


def api_key_of(settings: Settings) -> str | None:
    """`server.api_key` (env SCHOLIA_SERVER_API_KEY or SCHOLIA_API_KEY); blank = off."""
    secret = settings.server.api_key
    key = secret.get_secret_value().strip() if secret is not None else ""
    return key or None


def create_app(
    settings: Settings | None = None,
    services: Services | None = None,
    *,
    warm_up: bool = False,
    engine: dict[str, Any] | None = None,
    startup: StartupSteps | None = None,
) -> FastAPI:
    """The app. `warm_up`: run one question's path and measure the LLM before the port opens
    (uvicorn binds only after the lifespan's start-up). `engine`: the supervised vLLM's settings,
    shown by /ready."""
    settings = settings or get_settings()
    apply_offline_env(settings.data_dir)  # before the UI and the models load

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is None:
            app.state.services = build_services(settings)
        if engine is not None:
            app.state.services.engine = engine
        if warm_up:
            steps = startup or StartupSteps()
            with steps.timed("warm_up_s"):
                await _warm_up(app.state.services)
            _record_startup(app.state.services, steps)
        yield

    app = FastAPI(
        title="Scholia",
        summary="Cited answers from a collection of research papers.",
        version="0.1.0",
        lifespan=lifespan,
    )
    if services is not None:
        app.state.services = services
    app.state.settings = settings
    app.state.metrics = metrics = Metrics()
    api_key = api_key_of(settings)
    app.include_router(ask.router)
    app.include_router(search.router)
    app.include_router(papers.router)
    app.include_router(openai_compat.router)
    app.include_router(health.router)
    install_error_handlers(app)
    install_middleware(app, settings.server, metrics, api_key)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    from assistant.ui import mount_ui

    mount_ui(app, api_key)
    return app


async def _warm_up(services: Services) -> None:
    calibration = await warm_up_path(services.assistant)
    if calibration is None:
        return
    settings = services.settings
    longest = longest_prompt_tokens(settings, await services.llm.context_window())
    services.llm.calibrate(calibration, longest, settings.llm.max_answer_tokens)
    log.warning(
        "warm-up done in %.1f s: prefill %.0f tokens/s, decode %.1f tokens/s, first token after "
        "%.1f s for a %d-token prompt; LLM deadline %g s",
        calibration.warmup_s,
        calibration.prefill_tokens_s,
        calibration.decode_tokens_s,
        calibration.first_token_long_s,
        calibration.long_prompt_tokens,
        services.llm.timeout_s,
    )


def _record_startup(services: Services, steps: StartupSteps) -> None:
    calibration = services.llm.calibration
    engine = services.engine or {}
    entry = steps.record(
        services.settings.logs_dir,
        {
            "cpu": engine.get("cpu", {}).get("model"),
            "dtype": engine.get("dtype"),
            "enforce_eager": engine.get("enforce_eager"),
            "measured": calibration.describe() if calibration is not None else None,
        },
    )
    log.warning("start-up steps (s): %s", {k: v for k, v in entry.items() if k.endswith("_s")})
