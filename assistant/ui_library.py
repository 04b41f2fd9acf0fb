"""The UI's Library tab: the papers in the index (search, pages), a paper's chunks, "ask about
this paper", removal, and an upload box whose ingest runs in the background with its progress.

Every title, id, chunk and rejection reason is HTML-escaped: a paper's text shows as text.
`/ui/?paper=<id>` opens the tab on that paper; `&ask=1` scopes the Ask tab's questions to it.
"""

from __future__ import annotations

import html
import logging
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import FastAPI

from assistant.api.jobs import NoPapersError, UploadFormat
from assistant.library import jobs_of, paper_detail, paper_list, remove_paper, services_of
from assistant.schemas import IngestJob, PaperDetail, PaperList
from ingest.pipeline import IngestLockedError

log = logging.getLogger("scholia.ui")

PAGE_SIZE = 10
# Each tick is a POST /ui/… that the per-client rate limit counts.
POLL_S = 2.0
JSONL_SUFFIXES = (".jsonl", ".ndjson")
UPLOAD_SUFFIXES = [*JSONL_SUFFIXES, ".txt"]

LIBRARY_CSS = """
.scholia-paper { border: 1px solid var(--border-color-primary); border-radius: 10px;
  padding: 0.5rem 0.8rem; margin-bottom: 0.5rem; }
.scholia-paper h4 { margin: 0 0 0.2rem; font-size: 0.95rem; }
.scholia-paper a { margin-right: 0.8rem; font-size: 0.82rem; }
.scholia-chunk { white-space: pre-wrap; font-size: 0.85rem; margin: 0 0 0.6rem; }
.scholia-job.failed, .scholia-job.interrupted { color: var(--error-text-color); }
"""


@dataclass(frozen=True)
class Scope:
    """The Ask tab's paper scope: the state the answer reads, the note and its clear button."""

    paper: gr.State
    note: gr.HTML
    clear: gr.Button


@dataclass(frozen=True)
class Library:
    head: gr.HTML
    query: gr.Textbox
    search: gr.Button
    previous: gr.Button
    next: gr.Button
    page: gr.State
    listing: gr.HTML
    paper_id: gr.Textbox
    show: gr.Button
    ask: gr.Button
    remove: gr.Button
    paper: gr.HTML
    upload: gr.File
    add: gr.Button
    job: gr.HTML
    job_id: gr.State
    timer: gr.Timer


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def render_head(papers: PaperList) -> str:
    index = papers.index
    # An index built before ingest times were kept has papers but no time.
    last = index.last_ingest or ("not recorded" if index.papers else "never")
    return (
        f"<p class='scholia-panel-head'>{index.papers} papers · {index.chunks} chunks · "
        f"embedding model {_e(index.embed_model or '—')} · last ingest {_e(last)}</p>"
    )


def render_list(papers: PaperList, query: str = "") -> str:
    if not papers.papers:
        what = f"No paper matches “{_e(query)}”." if query else "The index holds no papers yet."
        return f"<p class='scholia-empty'>{what}</p>"
    first = papers.offset + 1
    items = [
        f"<p class='scholia-panel-head'>Papers {first}–{papers.offset + len(papers.papers)} "
        f"of {papers.total}</p>"
    ]
    for paper in papers.papers:
        link = "?paper=" + urllib.parse.quote(paper.id, safe="")
        state = "" if paper.complete else " · being written"
        items.append(
            f"<div class='scholia-paper'><h4>{_e(paper.title)}</h4>"
            f"<div class='scholia-meta'><code>{_e(paper.id)}</code><span>{paper.chunks} chunks"
            f"</span><span>ingested {_e(paper.ingested_at or '—')}{state}</span></div>"
            f"<a href='{_e(link)}'>chunks</a><a href='{_e(link + '&ask=1')}'>ask about this "
            "paper</a></div>"
        )
    return "".join(items)


def render_paper(detail: PaperDetail | None, paper_id: str) -> str:
    if detail is None:
        return (
            f"<p class='scholia-empty'>No paper {_e(paper_id)} in the index.</p>"
            if paper_id
            else ""
        )
    chunks = "".join(
        f"<p class='scholia-chunk'><b>#{chunk.index}</b> {_e(chunk.text)}</p>"
        for chunk in detail.chunks
    )
    return f"<h4>{_e(detail.title)}</h4><p><code>{_e(detail.id)}</code></p>{chunks}"


def render_job(job: IngestJob | None, message: str = "") -> str:
    if job is None:
        return f"<p class='scholia-job'>{_e(message)}</p>" if message else ""
    counts = (
        f"{job.written} of {job.to_write} new or changed papers written"
        if job.state == "running"
        else f"added {job.added}, updated {job.updated}, unchanged {job.unchanged}"
    )
    rejected = "".join(f"<li>line {r.line}: {_e(r.reason)}</li>" for r in job.rejected)
    return (
        f"<div class='scholia-job {job.state}'><p>{_e(job.file)}: <b>{job.state}</b> · "
        f"{job.papers} papers in the file · {counts}</p>"
        + (f"<p>{_e(job.error)}</p>" if job.error else "")
        + (f"<p>{len(job.rejected)} records rejected:</p><ul>{rejected}</ul>" if rejected else "")
        + "</div>"
    )


def scope_note(title: str | None) -> str:
    if not title:
        return ""
    return f"<p class='scholia-note'>Questions are about one paper only: <b>{_e(title)}</b></p>"


def library_layout() -> Library:
    """The tab: index summary, search and the list on the left; a paper and uploads right."""
    head = gr.HTML("", elem_id="scholia-library-head")
    with gr.Row(equal_height=True):
        query = gr.Textbox(
            show_label=False,
            placeholder="Search the papers by title or words…",
            max_length=500,
            scale=5,
            elem_id="scholia-library-search",
        )
        search = gr.Button("Search", scale=1, elem_id="scholia-library-go")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            listing = gr.HTML("", elem_id="scholia-library")
            with gr.Row():
                previous = gr.Button("← Previous", size="sm", elem_id="scholia-previous")
                following = gr.Button("Next →", size="sm", elem_id="scholia-next")
        with gr.Column(scale=2):
            paper_id = gr.Textbox(label="Paper id", max_length=500, elem_id="scholia-paper-id")
            with gr.Row():
                show = gr.Button("Show chunks", size="sm", elem_id="scholia-show")
                ask = gr.Button("Ask about this paper", size="sm", elem_id="scholia-ask-paper")
                remove = gr.Button("Remove", size="sm", variant="stop", elem_id="scholia-remove")
            paper = gr.HTML("", elem_id="scholia-paper")
            upload = gr.File(
                label="Add papers: JSON Lines (.jsonl) or the papers page format (.txt)",
                file_types=UPLOAD_SUFFIXES,
                type="filepath",
                elem_id="scholia-upload",
            )
            add = gr.Button("Add papers", variant="primary", elem_id="scholia-add")
            job = gr.HTML("", elem_id="scholia-job")
    return Library(
        head, query, search, previous, following, gr.State(0), listing, paper_id, show, ask,
        remove, paper, upload, add, job, gr.State(None), gr.Timer(POLL_S, active=False),
    )  # fmt: skip


class LibraryHandlers:
    """The tab's event functions (run in Gradio's worker threads: they read the index)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def refresh(self, query: str, page: int) -> tuple[str, str, int]:
        """(head, list, page), the page moved back within the results if it ran past them."""
        query = (query or "").strip()
        papers = paper_list(services_of(self.app), query, page * PAGE_SIZE, PAGE_SIZE)
        if not papers.papers and papers.total and page > 0:
            page = (papers.total - 1) // PAGE_SIZE
            papers = paper_list(services_of(self.app), query, page * PAGE_SIZE, PAGE_SIZE)
        return render_head(papers), render_list(papers, query), page

    def show(self, paper_id: str) -> str:
        paper_id = (paper_id or "").strip()
        return render_paper(paper_detail(services_of(self.app), paper_id), paper_id)

    def scope(self, paper_id: str) -> tuple[Any, Any, Any, Any, str]:
        """(scope, note, clear button, tabs, paper panel): the Ask tab, scoped to the paper."""
        paper_id = (paper_id or "").strip()
        detail = paper_detail(services_of(self.app), paper_id)
        if detail is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), render_paper(None, paper_id)
        return (
            paper_id,
            scope_note(detail.title),
            gr.Button(visible=True),
            gr.Tabs(selected="ask"),
            render_paper(detail, paper_id),
        )

    def remove(self, paper_id: str, query: str, page: int) -> tuple[str, str, str, int]:
        """(paper panel, head, list, page)."""
        paper_id = (paper_id or "").strip()
        try:
            removed = remove_paper(self.app, services_of(self.app).settings, paper_id)
            message = f"Removed {paper_id}." if removed else f"No paper {paper_id} in the index."
        except IngestLockedError:
            message = "An ingest is running; remove the paper once it has finished."
        return (f"<p class='scholia-note'>{_e(message)}</p>", *self.refresh(query, page))

    def add(self, upload: str | None) -> tuple[str, Any, Any]:
        """(job panel, job id, timer): the upload's ingest started, or why not."""
        if not upload:
            return render_job(None, "Choose a file first."), gr.skip(), gr.skip()
        path = Path(upload)
        if path.suffix.lower() not in UPLOAD_SUFFIXES:
            return render_job(None, "Upload a .jsonl, .ndjson or .txt file."), None, gr.skip()
        limit = services_of(self.app).settings.server.max_upload_bytes
        if path.stat().st_size > limit:
            return render_job(None, f"The file is over the {limit}-byte limit."), None, gr.skip()
        kind: UploadFormat = "jsonl" if path.suffix.lower() in JSONL_SUFFIXES else "pages"
        try:
            job = jobs_of(self.app).start(path.read_bytes(), kind, path.name)
        except IngestLockedError:
            return render_job(None, "Another ingest is running; try again soon."), None, gr.skip()
        except NoPapersError as error:
            rejected = IngestJob(
                id="-", state="failed", file=path.name, papers=0, error=str(error),
                rejected=error.rejected, started_at="",
            )  # fmt: skip
            return render_job(rejected), None, gr.skip()
        return render_job(job), job.id, gr.Timer(active=True)

    def poll(self, job_id: str | None, query: str, page: int) -> tuple[Any, ...]:
        """(job panel, timer, upload, head, list, page) while a job runs and once it ends."""
        job = jobs_of(self.app).get(job_id) if job_id else None
        if job is not None and job.state == "running":
            return render_job(job), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return render_job(job), gr.Timer(active=False), None, *self.refresh(query, page)

    def on_load(self, request: gr.Request) -> tuple[Any, ...]:
        """(tabs, paper id, paper panel, scope, note, clear, head, list, job panel, job id,
        timer) from `?paper=&ask=`, and the ingest running now, if any."""
        params = request.query_params if request else {}
        head, listing, _ = self.refresh("", 0)
        running = jobs_of(self.app).current()
        job: tuple[Any, ...] = (gr.skip(),) * 3
        if running is not None:
            job = (render_job(running), running.id, gr.Timer(active=True))
        paper_id = str(params.get("paper", ""))[:500]
        if not paper_id:
            return *(gr.skip(),) * 6, head, listing, *job
        if params.get("ask"):
            scope, note, clear, tabs, panel = self.scope(paper_id)
            return tabs, paper_id, panel, scope, note, clear, head, listing, *job
        panel = self.show(paper_id)
        opened = (gr.Tabs(selected="library"), paper_id, panel, *(gr.skip(),) * 3)
        return *opened, head, listing, *job


def wire_library(demo: gr.Blocks, tabs: gr.Tabs, lib: Library, scope: Scope, app: FastAPI) -> None:
    handlers = LibraryHandlers(app)
    private: dict[str, Any] = {"api_visibility": "private"}
    listed = [lib.head, lib.listing, lib.page]
    lib.search.click(lambda q: handlers.refresh(q, 0), lib.query, listed, **private)
    lib.query.submit(lambda q: handlers.refresh(q, 0), lib.query, listed, **private)
    pages = [lib.query, lib.page]
    lib.previous.click(lambda q, p: handlers.refresh(q, max(0, p - 1)), pages, listed, **private)
    lib.next.click(lambda q, p: handlers.refresh(q, p + 1), pages, listed, **private)
    lib.show.click(handlers.show, lib.paper_id, lib.paper, **private)
    scoped = [scope.paper, scope.note, scope.clear, tabs, lib.paper]
    lib.ask.click(handlers.scope, lib.paper_id, scoped, **private)
    lib.remove.click(handlers.remove, [lib.paper_id, *pages], [lib.paper, *listed], **private)
    lib.add.click(handlers.add, lib.upload, [lib.job, lib.job_id, lib.timer], **private)
    lib.timer.tick(
        handlers.poll,
        [lib.job_id, *pages],
        [lib.job, lib.timer, lib.upload, *listed],
        **private,
    )
    scope.clear.click(
        lambda: (None, "", gr.Button(visible=False)),
        None,
        [scope.paper, scope.note, scope.clear],
        **private,
    )
    loaded = [tabs, lib.paper_id, lib.paper, scope.paper, scope.note, scope.clear]
    ongoing = [lib.job, lib.job_id, lib.timer]
    demo.load(handlers.on_load, None, [*loaded, lib.head, lib.listing, *ongoing], **private)
