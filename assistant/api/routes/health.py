from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from assistant.api.deps import MetricsDep, ServicesDep

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up (no other check; never needs the API key)."""
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(services: ServicesDep) -> JSONResponse:
    """The index is open and holds papers, and the LLM answers; `problems` says what is not."""
    problems: list[str] = []
    index: dict[str, Any] = {"ok": False, "chunks": 0}
    try:
        chunks = await anyio.to_thread.run_sync(services.store.count)
        index["chunks"] = chunks
        if chunks == 0:
            problems.append("index is empty: run `scholia ingest`")
        else:
            index["ok"] = True
    except Exception as error:
        problems.append(f"index unavailable: {error}")
    calibration = services.llm.calibration
    llm: dict[str, Any] = {
        "ok": await services.llm.ping(),
        "model": services.llm.model,
        "deadline_s": services.llm.timeout_s,
        "engine": services.engine,
        "measured": calibration.describe() if calibration is not None else None,
    }
    if not llm["ok"]:
        problems.append(f"LLM unreachable ({services.llm.model})")
    return JSONResponse(
        {"ready": not problems, "problems": problems, "checks": {"index": index, "llm": llm}},
        status_code=200 if not problems else 503,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(metrics: MetricsDep) -> Response:
    """Prometheus metrics: requests and latency per route, stage times, tokens, errors by kind."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
