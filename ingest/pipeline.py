"""`scholia ingest`: parse → chunk → embed → write Chroma → rebuild BM25, idempotently.

Two passes over the sources keep memory flat in the corpus size: the first parses every record
into (id, content hash, place) only; the second re-reads the sources and streams the papers that
need writing through chunk → embed → write in batches of whole papers.

A paper counts as present only when all its chunks of one version are stored (every chunk
carries the paper's hash and chunk count), so a run killed at any point is repaired by the next
run, and a failed write leaves each paper's previous version in place.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.chunk import Chunk, chunk_paper
from ingest.embed import Embedder
from ingest.keyword import KeywordIndex, KeywordStore
from ingest.ledger import IngestLedger, now_iso
from ingest.parse import Paper, Rejected, read_papers
from ingest.store import ChromaStore, Manifest, PaperState, connect
from scholia.settings import ChunkingSettings, Settings

# Chunks embedded and written per batch, in units of the embedder's batch size.
WRITE_BATCHES = 16
# Without a terminal, one progress line at most this often (plus the first and the last).
LOG_EVERY_S = 10.0
# tqdm's default, but always in docs/s (tqdm flips to s/doc below one per second).
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}]"

Log = Callable[[str], None]
# (papers written, papers to write) after each batch lands.
OnProgress = Callable[[int, int], None]
# Chunks, embeds and writes a WriteJob's papers: `_write` here, or ingest.ray_engine's.
WriteStage = Callable[["WriteJob"], None]


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    chunks_written: int = 0
    keywords_rebuilt: bool = False
    sync_skipped: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"added {self.added}, updated {self.updated}, unchanged {self.unchanged}, "
            f"removed {self.removed}, rejected {len(self.rejected)} "
            f"({self.chunks_written} chunks written in {self.seconds:.1f} s)"
        )


class IngestLockedError(RuntimeError):
    """Another ingest holds this data directory (or, with a shared keyword store, the
    collection)."""


class IngestWriteError(RuntimeError):
    """Writing the vector or keyword index failed (disk full, server gone…)."""


@dataclass(frozen=True)
class SourceRecord:
    """What the first pass keeps of a paper: enough to decide and to find it again."""

    content_hash: str
    source: str
    line: int


@dataclass
class WriteJob:
    """What an engine's write stage needs: the papers to write and the run's shared state."""

    store: ChromaStore
    keywords: KeywordStore
    embedder: Embedder
    settings: Settings
    sources: Sequence[Path]
    todo: Mapping[str, SourceRecord]
    previous: Mapping[str, PaperState]
    report: IngestReport
    meter: _Progress

    def writer(self, pool: ThreadPoolExecutor) -> _BatchWriter:
        ledger = ingest_ledger(self.settings)
        return _BatchWriter(
            self.store,
            self.keywords,
            self.embedder,
            self.previous,
            self.report,
            self.meter,
            pool,
            ledger,
        )

    @property
    def chunks_per_write(self) -> int:
        return self.settings.embedding.batch_size * WRITE_BATCHES


def open_store(settings: Settings) -> ChromaStore:
    return ChromaStore(
        connect(settings.index.chroma_url, settings.chroma_dir), settings.index.collection
    )


def keyword_folder(settings: Settings) -> Path:
    """The local BM25 index's folder (named for the collection and where Chroma is)."""
    suffix = "server" if settings.index.chroma_url else "local"
    return settings.data_dir / f"bm25-{settings.index.collection}-{suffix}"


def keyword_index(settings: Settings) -> KeywordStore:
    """The keyword store `index.keyword` chooses."""
    if settings.index.keyword == "postgres" and settings.index.keyword_url:
        from ingest.keyword_postgres import PostgresKeywordStore

        return PostgresKeywordStore(
            settings.index.keyword_url,
            settings.index.collection,
            candidate_budget=settings.index.keyword_candidates,
        )
    return KeywordIndex(keyword_folder(settings))


def ingest_ledger(settings: Settings) -> IngestLedger:
    """When each paper was written (kept beside the keyword index, named like it)."""
    folder = keyword_folder(settings)
    return IngestLedger(folder.with_name(folder.name.replace("bm25-", "ingested-", 1) + ".jsonl"))


def wanted_manifest(settings: Settings, embedder: Embedder) -> Manifest:
    return Manifest(
        embed_model=embedder.name,
        embed_dim=embedder.dimension,
        chunk_max_tokens=settings.chunking.max_tokens,
        chunk_overlap_tokens=settings.chunking.overlap_tokens,
    )


@contextmanager
def ingest_lock(data_dir: Path) -> Iterator[None]:
    """An exclusive, non-blocking lock on the data directory (released when the process dies)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "ingest.lock"
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            handle.seek(0)
            holder = handle.read().strip()
            raise IngestLockedError(
                "Another `scholia ingest` is running on this data directory"
                + (f" (pid {holder})" if holder else "")
                + f"; wait for it to finish (lock: {path})."
            ) from error
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


@contextmanager
def writer_lock(settings: Settings) -> Iterator[None]:
    """The data directory's ingest lock and, for a keyword store that replicas share, the
    store's own: one ingest or removal at a time across every replica (IngestLockedError)."""
    with ingest_lock(settings.data_dir), keyword_index(settings).sole_writer() as sole:
        if not sole:
            raise IngestLockedError(
                f"Another replica is ingesting into collection {settings.index.collection!r} "
                "(its keyword store is locked); wait for it to finish."
            )
        yield


def scan_sources(paths: Sequence[Path], report: IngestReport) -> dict[str, SourceRecord]:
    """First pass: every paper's id → hash and place; a duplicate id keeps the first paper."""
    records: dict[str, SourceRecord] = {}
    for path in paths:
        for item in read_papers(path):
            if isinstance(item, Rejected):
                report.rejected.append(item)
            elif item.id in records:
                first = records[item.id]
                where = f"line {first.line}" if first.source == item.source else str(first)
                report.rejected.append(
                    Rejected(item.source, item.line, f"duplicate id {item.id!r} (first at {where})")
                )
            else:
                records[item.id] = SourceRecord(item.content_hash, item.source, item.line)
    return records


def iter_selected(paths: Sequence[Path], selected: Mapping[str, SourceRecord]) -> Iterator[Paper]:
    """Second pass: the papers in `selected`, each at the place the first pass found it."""
    for path in paths:
        for item in read_papers(path):
            if isinstance(item, Paper):
                record = selected.get(item.id)
                if record and (record.source, record.line) == (item.source, item.line):
                    yield item


def _checked_paths(paths: Sequence[Path]) -> list[Path]:
    unique: dict[Path, Path] = {}
    for path in map(Path, paths):
        unique.setdefault(path.resolve(), path)
    missing = [str(path) for path in unique.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError("No such corpus file: " + ", ".join(missing))
    return list(unique.values())


def run_ingest(
    settings: Settings,
    paths: Sequence[Path],
    *,
    sync: bool = False,
    rebuild: bool = False,
    embedder: Embedder | None = None,
    log: Log = print,
    progress: bool | None = None,
    on_progress: OnProgress | None = None,
    locked: bool = False,
    write_stage: WriteStage | None = None,
) -> IngestReport:
    """Bring the index in line with `paths`. Raises FileNotFoundError, IndexMismatchError,
    IngestLockedError, StoreUnavailableError or IngestWriteError; bad records are only reported.
    `locked`: the caller already holds `writer_lock` (the API takes it before answering).
    `write_stage`: what chunks, embeds and writes the selected papers (default: this process).
    """
    started = time.perf_counter()
    report = IngestReport()
    sources = _checked_paths(paths)
    # Called, not Embedder.of: tests stand a fake in for `Embedder` here.
    embedder = embedder or Embedder(
        settings.embedding.model_path, settings.embedding.batch_size, settings.embedding.device
    )
    with nullcontext() if locked else writer_lock(settings):
        store = open_store(settings)
        keywords = keyword_index(settings)
        manifest = wanted_manifest(settings, embedder)
        if rebuild:
            store.drop()
            keywords.remove()
            log(f"rebuild: deleted collection {settings.index.collection!r} and its keyword index")
        store.check_manifest(manifest)

        records = scan_sources(sources, report)
        for rejected in report.rejected:
            log(f"rejected {rejected}")
        _guard_write(lambda: store.write_manifest(manifest), "recording the index manifest")
        scan = store.scan()
        todo = _papers_to_write(records, scan.states, report)
        meter = _Progress(len(todo), progress, log, on_progress)
        job = WriteJob(
            store, keywords, embedder, settings, sources, todo, scan.states, report, meter
        )
        with meter:
            if todo:
                (write_stage or _write)(job)
        if sync:
            _remove_stale(store, keywords, sorted(set(scan.states) - set(records)), report, log)
        _refresh_keywords(keywords, store, scan.fingerprint, report)
        if report.chunks_written or report.removed:
            _guard_write(lambda: store.mark_ingested(now_iso()), "recording the ingest time")
    report.seconds = time.perf_counter() - started
    log(report.summary())
    return report


def _papers_to_write(
    records: Mapping[str, SourceRecord],
    stored: Mapping[str, PaperState],
    report: IngestReport,
) -> dict[str, SourceRecord]:
    """The papers new to the index, changed, or left incomplete by an interrupted run."""
    todo: dict[str, SourceRecord] = {}
    for paper_id, record in records.items():
        state = stored.get(paper_id)
        if state is None:
            report.added += 1
            todo[paper_id] = record
        elif state.content_hash != record.content_hash or not state.complete:
            report.updated += 1
            todo[paper_id] = record
        else:
            report.unchanged += 1
    return todo


def _remove_stale(
    store: ChromaStore, keywords: KeywordStore, stale: list[str], report: IngestReport, log: Log
) -> None:
    """`--sync`: remove the papers the sources no longer hold, unless some records were
    rejected (a rejected record would look like a removed paper)."""
    if stale and report.rejected:
        report.sync_skipped = True
        log(
            f"sync: kept {len(stale)} papers not found in the sources because "
            f"{len(report.rejected)} records were rejected; fix them and re-run"
        )
    elif stale:
        _guard_write(lambda: store.delete_papers(stale), "removing papers")
        _guard_write(lambda: keywords.delete_papers(stale), "removing papers' keywords")
        report.removed = len(stale)
        for paper_id in stale:
            log(f"removed {paper_id}")


def remove_papers(settings: Settings, paper_ids: Sequence[str], log: Log = print) -> list[str]:
    """Delete papers from Chroma, then rebuild BM25 from what Chroma holds, under the ingest
    lock (IngestLockedError while an ingest runs). Returns the ids that were in the index."""
    with writer_lock(settings):
        store = open_store(settings)
        present = [
            paper_id for paper_id in dict.fromkeys(paper_ids) if store.paper_chunks(paper_id)
        ]
        if present:
            report = IngestReport()
            keywords = keyword_index(settings)
            _remove_stale(store, keywords, present, report, log)
            _refresh_keywords(keywords, store, "", report)
            _guard_write(lambda: store.mark_ingested(now_iso()), "recording the removal time")
    return present


def _refresh_keywords(
    keywords: KeywordStore, store: ChromaStore, fingerprint: str, report: IngestReport
) -> None:
    """Rebuild BM25 from Chroma when anything changed or it does not match the collection,
    unless the store confirms from its own ids and hashes that it holds Chroma's chunks (the
    PostgreSQL store, kept up to date per batch): then no chunk text is read again."""
    recorded = keywords.state()
    changed = report.chunks_written > 0 or report.removed > 0
    if changed or recorded is None or recorded.get("fingerprint") != fingerprint:
        if keywords.confirm(lambda: store.scan().fingerprint):
            return
        _guard_write(
            lambda: keywords.build_from(store.iter_documents()),
            f"writing the keyword index in {keywords.where} (the previous one is unchanged)",
        )
        report.keywords_rebuilt = True


def _guard_write(action: Callable[[], object], what: str) -> None:
    try:
        action()
    except Exception as error:
        raise IngestWriteError(
            f"Failed while {what}: {type(error).__name__}: {error}. Papers written before "
            "the failure are complete and the rest of the index is as it was; fix the cause "
            "(e.g. free disk space) and re-run `scholia ingest`."
        ) from error


def _write(job: WriteJob) -> None:
    """Chunk → embed → write in this process (see `write_batches`)."""
    chunked = (
        (paper, chunks, None)
        for paper in iter_selected(job.sources, job.todo)
        if (chunks := _chunks_or_reject(paper, job)) is not None
    )
    write_batches(job, chunked)


def write_batches(job: WriteJob, chunked: Iterable[tuple[Paper, list[Chunk], Any]]) -> None:
    """Write (paper, chunks, their vectors or None to embed here) in batches of whole papers;
    a batch's write overlaps the making of the next batch (one writer thread, at most one
    write in flight)."""
    with ThreadPoolExecutor(1) as pool:
        writer = job.writer(pool)
        batch: list[tuple[Paper, list[Chunk]]] = []
        vectors: list[Any] = []
        batch_chunks = 0
        for paper, chunks, rows in chunked:
            batch.append((paper, chunks))
            vectors.append(rows)
            batch_chunks += len(chunks)
            if batch_chunks >= job.chunks_per_write:
                writer.flush(batch, _stacked(vectors))
                batch, vectors, batch_chunks = [], [], 0
        if batch:
            writer.flush(batch, _stacked(vectors))
        writer.settle()


def _stacked(vectors: list[Any]) -> Any:
    """One array of the papers' vectors; None when any paper is still to embed."""
    import numpy as np

    return None if any(rows is None for rows in vectors) else np.concatenate(vectors)


def chunks_of(paper: Paper, embedder: Embedder, chunking: ChunkingSettings) -> list[Chunk]:
    """The paper's chunks under the settings' limits; ValueError when it cannot be chunked."""
    return chunk_paper(
        paper,
        embedder.count_tokens,
        chunking.max_tokens,
        chunking.overlap_tokens,
        embedder.count_tokens_many,
    )


def _chunks_or_reject(paper: Paper, job: WriteJob) -> list[Chunk] | None:
    """The paper's chunks; None when it cannot be chunked (see `reject_unchunkable`)."""
    try:
        return chunks_of(paper, job.embedder, job.settings.chunking)
    except ValueError as error:
        reject_unchunkable(paper, str(error), job)
        return None


def reject_unchunkable(paper: Paper, reason: str, job: WriteJob) -> None:
    """Report a paper that cannot be chunked as rejected, no longer added or updated."""
    rejected = Rejected(paper.source, paper.line, reason)
    job.report.rejected.append(rejected)
    job.meter.emit(f"rejected {rejected}")
    if paper.id in job.previous:
        job.report.updated -= 1
    else:
        job.report.added -= 1
    job.meter.drop(1)


class _BatchWriter:
    """Embeds a batch in the caller's thread and writes it in `pool`'s one thread; a batch is
    counted as written only once its write has returned."""

    def __init__(
        self,
        store: ChromaStore,
        keywords: KeywordStore,
        embedder: Embedder,
        previous: Mapping[str, PaperState],
        report: IngestReport,
        meter: _Progress,
        pool: ThreadPoolExecutor,
        ledger: IngestLedger,
    ) -> None:
        self.store = store
        self.keywords = keywords
        self.embedder = embedder
        self.previous = previous
        self.report = report
        self.meter = meter
        self.pool = pool
        self.ledger = ledger
        # The write in flight and its papers' (id, hash).
        self.pending: tuple[Future[int], list[tuple[str, str]]] | None = None

    def settle(self) -> None:
        """Wait for the write in flight; raises its IngestWriteError."""
        if self.pending is not None:
            future, papers = self.pending
            self.pending = None
            self.report.chunks_written += future.result()
            _guard_write(lambda: self.ledger.record(papers), "recording the ingest times")
            self.meter.advance(len(papers))

    def flush(self, batch: list[tuple[Paper, list[Chunk]]], vectors: Any = None) -> None:
        """Write `batch` (embedded here unless `vectors`, one row per chunk, are given)."""
        if vectors is None:
            vectors = self.embedder.encode([c.text for _, chunks in batch for c in chunks])
        self.settle()
        done, total = self.meter.done, self.meter.total
        what = f"writing papers {done + 1}–{done + len(batch)} of {total} to Chroma"

        keyword_rows = [
            (paper.id, paper.content_hash, [(chunk.id, chunk.text) for chunk in chunks])
            for paper, chunks in batch
        ]

        def write() -> int:
            written: list[int] = []
            _guard_write(
                lambda: written.append(self.store.write_papers(batch, vectors, self.previous)),
                what,
            )
            # After Chroma: a kill in between leaves the keyword store behind, which the
            # refresh at the end of the next run sees (fingerprint) and repairs.
            _guard_write(
                lambda: self.keywords.write_papers(keyword_rows),
                what.replace("to Chroma", f"to the keyword store ({self.keywords.where})"),
            )
            return written[0]

        written = [(paper.id, paper.content_hash) for paper, _ in batch]
        self.pending = (self.pool.submit(write), written)


class _Progress:
    """A tqdm bar (docs/s) on a terminal; otherwise a line now and then. Counts written papers."""

    def __init__(
        self, total: int, progress: bool | None, log: Log, on_progress: OnProgress | None = None
    ) -> None:
        from tqdm import tqdm

        self.total = total
        self.done = 0
        self.on_progress = on_progress
        self.interactive = sys.stderr.isatty() if progress is None else progress
        self._log = log
        self._bar = tqdm(
            total=total,
            unit="doc",
            desc="ingest",
            disable=not self.interactive or total == 0,  # nothing to write: no bar
            smoothing=0.05,
            bar_format=BAR_FORMAT,
        )
        self._started = self._last = time.perf_counter()
        self._notify()

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._bar.close()
        self._notify()

    def _notify(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)

    def emit(self, line: str) -> None:
        (self._bar.write if self.interactive else self._log)(line)

    def drop(self, papers: int) -> None:
        self.total -= papers
        self._bar.total = self.total
        self._bar.refresh()
        self._notify()

    def advance(self, papers: int) -> None:
        first = self.done == 0
        self.done += papers
        self._bar.update(papers)
        self._notify()
        now = time.perf_counter()
        if self.interactive:
            return
        if first or self.done >= self.total or now - self._last >= LOG_EVERY_S:
            rate = self.done / max(now - self._started, 1e-9)
            self._log(f"ingest: {self.done}/{self.total} papers, {rate:.1f} docs/s")
            self._last = now
