"""The collection in view: the papers in the index, searched by title or words, page by page."""

from __future__ import annotations

from dataclasses import dataclass

from ingest.keyword import KeywordStore, paper_of
from ingest.ledger import IngestLedger
from ingest.parse import normalize_title
from ingest.store import ChromaStore, PaperEntry

# BM25 chunks looked at when a search's words are not all in a title.
KEYWORD_CANDIDATES = 200


@dataclass(frozen=True)
class LibraryPaper:
    id: str
    title: str
    chunks: int
    ingested_at: str | None  # None: written before ingest times were recorded
    complete: bool


@dataclass(frozen=True)
class LibraryPage:
    papers: list[LibraryPaper]
    total: int  # papers matching the query (all papers without one)
    papers_in_index: int
    chunks_in_index: int


def library_page(
    store: ChromaStore,
    keywords: KeywordStore,
    ledger: IngestLedger,
    query: str = "",
    offset: int = 0,
    limit: int = 20,
) -> LibraryPage:
    """Newest first (then by title); with a query, title matches first, then BM25 matches."""
    entries = store.paper_entries()
    papers = _with_times(entries, ledger)
    papers.sort(key=lambda paper: normalize_title(paper.title))
    papers.sort(key=lambda paper: paper.ingested_at or "", reverse=True)
    matching = _matching(papers, query, keywords) if query.strip() else papers
    return LibraryPage(
        papers=matching[offset : offset + limit],
        total=len(matching),
        papers_in_index=len(entries),
        chunks_in_index=sum(entry.chunks for entry in entries),
    )


def _with_times(entries: list[PaperEntry], ledger: IngestLedger) -> list[LibraryPaper]:
    times = ledger.times()
    papers = []
    for entry in entries:
        recorded = times.get(entry.id)
        # A time recorded for another version of the paper is not this version's.
        at = recorded[1] if recorded and recorded[0] == entry.content_hash else None
        papers.append(LibraryPaper(entry.id, entry.title, entry.chunks, at, entry.complete))
    return papers


def _matching(papers: list[LibraryPaper], query: str, keywords: KeywordStore) -> list[LibraryPaper]:
    words = normalize_title(query).split()
    by_title = [
        paper for paper in papers if all(word in normalize_title(paper.title) for word in words)
    ]
    seen = {paper.id for paper in by_title}
    by_id = {paper.id: paper for paper in papers}
    by_words = []
    for hit in keywords.search(query, KEYWORD_CANDIDATES):
        paper_id = paper_of(hit.chunk_id)
        if paper_id in by_id and paper_id not in seen:
            seen.add(paper_id)
            by_words.append(by_id[paper_id])
    return by_title + by_words
