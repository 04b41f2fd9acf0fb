"""`scholia ingest`: parse → chunk → embed → write Chroma → rebuild BM25, idempotently.

A paper is written whole (its old chunks deleted first) and counts as present only when all its
chunks are stored, so a run killed at any point is repaired by the next run.
"""

from __future__ import annotations

import fcntl
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from assistant.settings import Settings
from ingest.chunk import Chunk, chunk_paper
from ingest.embed import Embedder
from ingest.keyword import KeywordIndex, fingerprint
from ingest.parse import Paper, Rejected, read_papers
from ingest.store import ChromaStore, Manifest, connect


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    chunks_written: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"added {self.added}, updated {self.updated}, unchanged {self.unchanged}, "
            f"removed {self.removed}, rejected {len(self.rejected)} "
            f"({self.chunks_written} chunks written in {self.seconds:.1f} s)"
        )


class IngestLockedError(RuntimeError):
    pass


def open_store(settings: Settings) -> ChromaStore:
    return ChromaStore(
        connect(settings.index.chroma_url, settings.chroma_dir), settings.index.collection
    )


def keyword_index(settings: Settings) -> KeywordIndex:
    suffix = "server" if settings.index.chroma_url else "local"
    return KeywordIndex(settings.data_dir / f"bm25-{settings.index.collection}-{suffix}")


def wanted_manifest(settings: Settings, embedder: Embedder) -> Manifest:
    return Manifest(
        embed_model=embedder.name,
        embed_dim=embedder.dimension,
        chunk_max_tokens=settings.chunking.max_tokens,
        chunk_overlap_tokens=settings.chunking.overlap_tokens,
    )


@contextmanager
def ingest_lock(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "ingest.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise IngestLockedError(
                "Another `scholia ingest` is running on this data directory."
            ) from error
        yield


def load_papers(paths: Sequence[Path], report: IngestReport) -> list[Paper]:
    """Parse every source; a duplicate id keeps the first paper and rejects the later one."""
    papers: dict[str, Paper] = {}
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"No such corpus file: {path}")
        for item in read_papers(path):
            if isinstance(item, Rejected):
                report.rejected.append(item)
            elif item.id in papers:
                first = papers[item.id]
                report.rejected.append(
                    Rejected(
                        item.source,
                        item.line,
                        f"duplicate id {item.id!r} (first at line {first.line})",
                    )
                )
            else:
                papers[item.id] = item
    return list(papers.values())


def run_ingest(
    settings: Settings,
    paths: Sequence[Path],
    *,
    sync: bool = False,
    rebuild: bool = False,
    embedder: Embedder | None = None,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
) -> IngestReport:
    started = time.perf_counter()
    report = IngestReport()
    embedder = embedder or Embedder(settings.embedding.model_path, settings.embedding.batch_size)
    with ingest_lock(settings.data_dir):
        store = open_store(settings)
        keywords = keyword_index(settings)
        manifest = wanted_manifest(settings, embedder)
        if rebuild:
            if store.exists():
                store.client.delete_collection(settings.index.collection)
            store = open_store(settings)
            shutil.rmtree(keywords.folder, ignore_errors=True)
        store.check_manifest(manifest)
        store.write_manifest(manifest)

        papers = load_papers(paths, report)
        for rejected in report.rejected:
            log(f"rejected {rejected}")
        states = store.paper_states()
        todo: list[Paper] = []
        for paper in papers:
            state = states.get(paper.id)
            if state is None:
                report.added += 1
                todo.append(paper)
            elif state.content_hash != paper.content_hash or not state.complete:
                report.updated += 1
                todo.append(paper)
            else:
                report.unchanged += 1

        _write(store, embedder, settings, todo, report, log, progress)

        if sync:
            wanted = {paper.id for paper in papers}
            stale = sorted(set(states) - wanted)
            store.delete_papers(stale)
            report.removed = len(stale)
            for paper_id in stale:
                log(f"removed {paper_id}")

        _refresh_keywords(store, keywords)
    report.seconds = time.perf_counter() - started
    log(report.summary())
    return report


def _write(
    store: ChromaStore,
    embedder: Embedder,
    settings: Settings,
    papers: list[Paper],
    report: IngestReport,
    log: Callable[[str], None],
    progress: bool | None,
) -> None:
    from tqdm import tqdm

    if not papers:
        return
    interactive = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=len(papers), unit="doc", desc="ingest", disable=not interactive)
    batch: list[tuple[Paper, list[Chunk]]] = []
    batch_chunks = 0
    done = 0
    for paper in papers:
        chunks = chunk_paper(
            paper,
            embedder.count_tokens,
            settings.chunking.max_tokens,
            settings.chunking.overlap_tokens,
        )
        batch.append((paper, chunks))
        batch_chunks += len(chunks)
        if batch_chunks >= settings.embedding.batch_size * 4:
            report.chunks_written += _flush(store, embedder, batch)
            done += len(batch)
            bar.update(len(batch))
            if not interactive:
                log(f"ingest: {done}/{len(papers)} papers")
            batch, batch_chunks = [], 0
    if batch:
        report.chunks_written += _flush(store, embedder, batch)
        bar.update(len(batch))
    bar.close()


def _flush(store: ChromaStore, embedder: Embedder, batch: list[tuple[Paper, list[Chunk]]]) -> int:
    texts = [chunk.text for _, chunks in batch for chunk in chunks]
    store.add_papers(batch, embedder.embed(texts))
    return len(texts)


def _refresh_keywords(store: ChromaStore, keywords: KeywordIndex) -> None:
    """Rebuild BM25 from what Chroma holds whenever the two disagree."""
    rows = list(store.iter_chunks())
    current = fingerprint(
        (chunk_id for chunk_id, _, _ in rows), (str(meta["paper_hash"]) for _, _, meta in rows)
    )
    state = keywords.state()
    if state is None or state.get("fingerprint") != current:
        keywords.build([row[0] for row in rows], [row[1] for row in rows], current)
