"""The library: list and search the papers in the index, add papers in the background, remove
papers. Adding and removing take the ingest lock: one at a time, a second gets 409."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from assistant.api.deps import JobsDep, ServicesDep
from assistant.api.jobs import NoPapersError, UploadFormat
from assistant.library import paper_detail, paper_list, remove_paper
from assistant.schemas import (
    ErrorResponse,
    IngestJob,
    PaperDetail,
    PaperList,
    PaperRemoved,
    UploadRejected,
)

router = APIRouter(prefix="/papers", tags=["library"])

# Content types of the two formats `scholia ingest` reads.
FORMATS: dict[str, UploadFormat] = {
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/jsonlines": "jsonl",
    "text/plain": "pages",
}
LOCKED: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "An ingest or a removal is running."}
}


@router.get("", response_model=PaperList)
async def list_papers(
    services: ServicesDep,
    q: Annotated[str, Query(max_length=500, description="Words of the title or text.")] = "",
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> PaperList:
    """The papers in the index, newest first; with `q`, title matches then keyword matches."""
    return await anyio.to_thread.run_sync(lambda: paper_list(services, q, offset, limit))


@router.post(
    "",
    status_code=202,
    response_model=IngestJob,
    responses={
        **LOCKED,
        413: {"model": ErrorResponse, "description": "Over `server.max_upload_bytes`."},
        415: {"model": ErrorResponse, "description": "Not JSON Lines or text/plain."},
        422: {"model": UploadRejected, "description": "No valid paper record in the upload."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/plain": {"schema": {"type": "string"}},
            },
        }
    },
)
async def add_papers(
    request: Request, services: ServicesDep, jobs: JobsDep, name: str = "upload"
) -> IngestJob | JSONResponse:
    """Add papers: the body is JSON Lines (`Content-Type: application/x-ndjson`) or the papers
    page format (`text/plain`), as `scholia ingest` reads them. Ingested in the background:
    follow `GET /papers/jobs/{id}`; bad records are reported with their line."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    kind = FORMATS.get(media_type)
    if kind is None:
        raise HTTPException(
            415,
            f"Unsupported content type {media_type or '(none)'!r}: send one of "
            + ", ".join(FORMATS),
        )
    body = await request.body()
    limit = services.settings.server.max_upload_bytes
    if len(body) > limit:
        raise HTTPException(413, f"Upload too large: the limit is {limit} bytes.")
    try:
        job = await anyio.to_thread.run_sync(lambda: jobs.start(body, kind, name[:200]))
    except NoPapersError as error:
        return JSONResponse(
            UploadRejected(detail=str(error), rejected=error.rejected).model_dump(),
            status_code=422,
        )
    return JSONResponse(
        job.model_dump(), status_code=202, headers={"location": f"/papers/jobs/{job.id}"}
    )


@router.get("/jobs/{job_id}", response_model=IngestJob, responses={404: {"model": ErrorResponse}})
async def job_status(job_id: str, jobs: JobsDep) -> IngestJob:
    """An upload's ingest: running, done, failed, or interrupted (the server stopped)."""
    job = await anyio.to_thread.run_sync(lambda: jobs.get(job_id))
    if job is None:
        raise HTTPException(404, f"No ingest job {job_id!r}.")
    return job


@router.get(
    "/{paper_id:path}", response_model=PaperDetail, responses={404: {"model": ErrorResponse}}
)
async def get_paper(paper_id: str, services: ServicesDep) -> PaperDetail:
    """One paper with its chunks, and the `filters` that scope /ask to it."""
    detail = await anyio.to_thread.run_sync(lambda: paper_detail(services, paper_id))
    if detail is None:
        raise HTTPException(404, f"No paper {paper_id!r} in the index.")
    return detail


@router.delete(
    "/{paper_id:path}",
    response_model=PaperRemoved,
    responses={**LOCKED, 404: {"model": ErrorResponse}},
)
async def delete_paper(paper_id: str, request: Request, services: ServicesDep) -> PaperRemoved:
    """Remove a paper from the dense and the keyword index."""
    removed = await anyio.to_thread.run_sync(
        lambda: remove_paper(request.app, services.settings, paper_id)
    )
    if not removed:
        raise HTTPException(404, f"No paper {paper_id!r} in the index.")
    papers = await anyio.to_thread.run_sync(lambda: len(services.store.paper_states()))
    return PaperRemoved(removed=paper_id, papers=papers)
