from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from assistant.api.deps import ServicesDep

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(services: ServicesDep) -> JSONResponse:
    """The index is open and holds papers, and the LLM answers."""
    problems: list[str] = []
    try:
        if services.store.count() == 0:
            problems.append("index is empty: run `scholia ingest`")
    except Exception as error:
        problems.append(f"index unavailable: {error}")
    if not await services.llm.ping():
        problems.append("LLM unreachable")
    status = 200 if not problems else 503
    return JSONResponse({"ready": not problems, "problems": problems}, status_code=status)
