"""The collection in view, for the API's /papers routes and the UI's Library tab alike."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from assistant.schemas import Chunk, IndexInfo, PaperDetail, PaperList, PaperSummary
from ingest.library import library_page
from ingest.pipeline import ingest_ledger, remove_papers
from scholia.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from assistant.api.jobs import IngestJobs
    from assistant.api.services import Services

_jobs_guard = threading.Lock()


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


def jobs_of(app: FastAPI) -> IngestJobs:
    """The app's one job runner (made on first use: the services exist only after start-up)."""
    from assistant.api.jobs import IngestJobs

    with _jobs_guard:
        jobs: IngestJobs | None = getattr(app.state, "jobs", None)
        if jobs is None:
            services = services_of(app)
            jobs = IngestJobs(
                services.settings,
                services.assistant.retriever.embedder,
                on_change=lambda: collection_changed(app),
            )
            app.state.jobs = jobs
    return jobs


def collection_changed(app: FastAPI) -> None:
    """Papers were added or removed: searches read the new indexes, the UI draws new examples."""
    services_of(app).reload()
    app.state.ui_examples = None


def paper_list(services: Services, query: str = "", offset: int = 0, limit: int = 20) -> PaperList:
    store = services.store
    page = library_page(
        store,
        services.assistant.retriever.keywords,
        ingest_ledger(services.settings),
        query,
        offset,
        limit,
    )
    manifest = store.manifest()
    return PaperList(
        total=page.total,
        offset=offset,
        limit=limit,
        papers=[PaperSummary(**paper.__dict__) for paper in page.papers],
        index=IndexInfo(
            embed_model=manifest.embed_model if manifest else None,
            embed_dim=manifest.embed_dim if manifest else None,
            chunk_max_tokens=manifest.chunk_max_tokens if manifest else None,
            chunk_overlap_tokens=manifest.chunk_overlap_tokens if manifest else None,
            last_ingest=store.last_ingest(),
            papers=page.papers_in_index,
            chunks=page.chunks_in_index,
        ),
    )


def paper_detail(services: Services, paper_id: str) -> PaperDetail | None:
    from assistant.retrieve import INTERNAL_METADATA

    rows = services.store.paper_chunks(paper_id)
    if not rows:
        return None
    metadata = rows[0][2]
    return PaperDetail(
        id=paper_id,
        title=str(metadata.get("title", "")),
        metadata={key: value for key, value in metadata.items() if key not in INTERNAL_METADATA},
        chunks=[
            Chunk(id=chunk_id, index=int(meta.get("chunk_index", 0)), text=text)
            for chunk_id, text, meta in rows
        ],
        filters={"paper_id": paper_id},
    )


def remove_paper(app: FastAPI, settings: Settings, paper_id: str) -> bool:
    """Remove a paper from both indexes (IngestLockedError while an ingest runs)."""
    removed = remove_papers(settings, [paper_id], log=lambda _: None)
    if removed:
        collection_changed(app)
    return bool(removed)
