"""The PostgreSQL keyword store, alone and under `run_ingest`: what it finds, that a re-run
writes nothing, that removals reach it, and that a crash between Chroma and it is repaired."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ingest.keyword import KeywordIndex
from ingest.keyword_postgres import PostgresKeywordStore
from ingest.pipeline import (
    IngestLockedError,
    IngestWriteError,
    keyword_index,
    open_store,
    remove_papers,
    run_ingest,
    writer_lock,
)
from ingest.store import StoreUnavailableError
from scholia.settings import IndexSettings, Settings
from tests.ingest.helpers import HashEmbedder, make_settings, paper_records, write_jsonl
from tests.servers import free_port

pytestmark = pytest.mark.postgres

ROWS = [
    ("quokka#0", "Quokkaformer\nA transformer trained on quokka photos from Rottnest.", "h1"),
    ("quokka#1", "Quokkaformer\nDrones count the quokkas at dawn.", "h1"),
    ("wombat#0", "Wombat nets\nBurrow detection with convolutional networks.", "h2"),
    ("speech#0", "Speech\nMel-spectrograms synthesized by diffusion in few iterations.", "h3"),
]


def _row_versions(store: PostgresKeywordStore) -> dict[str, str]:
    """chunk id → the row version's transaction id (xmin): it changes when a row is rewritten."""
    with store._transaction() as cursor:
        cursor.execute("SELECT chunk_id, xmin::text FROM scholia_papers_chunks")
        return dict(cursor.fetchall())


def _postgres_settings(data_dir: Path, postgres_url: str) -> Settings:
    return make_settings(
        data_dir, index=IndexSettings(keyword="postgres", keyword_url=postgres_url)
    )


def test_search_ranks_like_bm25_and_a_rebuild_of_the_same_rows_writes_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    store = PostgresKeywordStore(postgres_url, "papers")
    recorded = store.build_from(ROWS)
    assert store.state() == {"fingerprint": recorded, "chunks": 4}
    hits = store.search("How do drones count quokkas?", 5)
    assert [hit.chunk_id for hit in hits][:2] == ["quokka#1", "quokka#0"]
    assert hits[0].score > hits[1].score > 0
    assert [hit.chunk_id for hit in store.search("synthesizing mel spectrogram", 5)] == ["speech#0"]
    assert store.search("the of and", 5) == []  # stop words only
    assert store.search("it's a back\\slash 'quote'", 5) == []  # odd characters are quoted

    local = KeywordIndex(tmp_path / "bm25")  # the same rows give the same content fingerprint
    assert local.build_from(ROWS) == recorded

    before = _row_versions(store)
    assert store.build_from(ROWS) == recorded
    assert _row_versions(store) == before


def test_a_failure_inside_a_write_leaves_the_previous_rows(postgres_url: str) -> None:
    store = PostgresKeywordStore(postgres_url, "papers")
    store.build_from(ROWS)
    before, state = _row_versions(store), store.state()

    def crashing() -> Any:
        yield ("new#0", "A paper on kangaroos", "h9")
        raise RuntimeError("killed mid-batch")

    with pytest.raises(RuntimeError, match="killed mid-batch"):
        store.build_from(crashing())
    with pytest.raises(psycopg.DataError):  # Postgres refuses a NUL in text, mid-COPY
        store.write_papers(
            [("new", "h9", [("new#0", "kangaroos")]), ("bad", "h8", [("bad#0", "\0")])]
        )
    assert _row_versions(store) == before and store.state() == state
    assert store.search("kangaroos", 5) == []


def test_write_and_delete_papers_replace_whole_papers(postgres_url: str) -> None:
    store = PostgresKeywordStore(postgres_url, "papers")
    store.build_from(ROWS)
    store.write_papers([("quokka", "h1b", [("quokka#0", "Quokkaformer v2\nOnly one chunk.")])])
    assert store.state() is None  # unknown until the next full check
    assert [hit.chunk_id for hit in store.search("quokkaformer drones", 5)] == ["quokka#0"]
    store.delete_papers(["quokka", "wombat"])
    assert set(_row_versions(store)) == {"speech#0"}
    other = PostgresKeywordStore(postgres_url, "other collection")  # tables of its own
    assert other.state() is None and other.search("speech", 5) == []


def test_ingest_into_postgres_is_idempotent_and_repairs_a_crash_between_the_stores(
    postgres_url: str, tmp_path: Path, hash_embedder: HashEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _postgres_settings(tmp_path / "data", postgres_url)
    source = write_jsonl(tmp_path / "p.jsonl", paper_records(6))
    first = run_ingest(settings, [source], embedder=hash_embedder, log=lambda _: None)
    keywords = keyword_index(settings)
    assert isinstance(keywords, PostgresKeywordStore)
    chroma = open_store(settings).scan()
    assert keywords.state() == {"fingerprint": chroma.fingerprint, "chunks": first.chunks_written}
    assert not first.keywords_rebuilt  # the per-batch writes matched Chroma: no text re-read
    before = _row_versions(keywords)
    again = run_ingest(settings, [source], embedder=hash_embedder, log=lambda _: None)
    assert again.chunks_written == 0 and not again.keywords_rebuilt
    assert _row_versions(keywords) == before
    assert not (settings.data_dir / "bm25-papers-local").exists()

    # Killed after Chroma took a batch, before the keyword store did.
    def killed(*_: Any) -> None:
        raise KeyboardInterrupt

    more = write_jsonl(tmp_path / "more.jsonl", paper_records(8))
    monkeypatch.setattr(PostgresKeywordStore, "write_papers", killed)
    with pytest.raises(KeyboardInterrupt):
        run_ingest(settings, [more], embedder=hash_embedder, log=lambda _: None)
    monkeypatch.undo()
    repaired = run_ingest(settings, [more], embedder=hash_embedder, log=lambda _: None)
    assert repaired.keywords_rebuilt and repaired.chunks_written == 0  # Chroma had it all
    chroma = open_store(settings).scan()
    assert keyword_index(settings).state() == {
        "fingerprint": chroma.fingerprint,
        "chunks": sum(state.stored_chunks for state in chroma.states.values()),
    }
    assert set(_row_versions(keywords)) >= set(before)

    def refused(*_: Any) -> None:
        raise RuntimeError("permission denied for table scholia_papers_chunks")

    monkeypatch.setattr(PostgresKeywordStore, "write_papers", refused)
    last = write_jsonl(tmp_path / "last.jsonl", paper_records(9))
    with pytest.raises(IngestWriteError, match=r"to the keyword store \(PostgreSQL table .*denied"):
        run_ingest(settings, [last], embedder=hash_embedder, log=lambda _: None)
    monkeypatch.undo()

    removed = next(iter(chroma.states))
    assert remove_papers(settings, [removed], log=lambda _: None) == [removed]
    assert not [c for c in _row_versions(keywords) if c.startswith(removed + "#")]
    assert keywords.state() == {
        "fingerprint": open_store(settings).scan().fingerprint,
        "chunks": len(_row_versions(keywords)),
    }


def test_one_ingest_at_a_time_across_replicas_of_a_shared_store(
    postgres_url: str, tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    # Two replicas: two data directories (two file locks), one collection in one database.
    first = _postgres_settings(tmp_path / "replica-1", postgres_url)
    second = _postgres_settings(tmp_path / "replica-2", postgres_url)
    source = write_jsonl(tmp_path / "p.jsonl", paper_records(3))
    with writer_lock(first):
        with pytest.raises(IngestLockedError, match="Another replica is ingesting"):
            run_ingest(second, [source], embedder=hash_embedder, log=lambda _: None)
        with pytest.raises(IngestLockedError):
            remove_papers(second, ["any"], log=lambda _: None)
        other = make_settings(
            tmp_path / "replica-2",
            index=IndexSettings(keyword="postgres", keyword_url=postgres_url, collection="other"),
        )
        with writer_lock(other):  # another collection is not held up
            pass
    report = run_ingest(second, [source], embedder=hash_embedder, log=lambda _: None)
    assert report.added == 3  # released with the block


def test_an_unreachable_keyword_store_is_unavailable_not_a_crash() -> None:
    store = PostgresKeywordStore(f"postgresql://postgres@127.0.0.1:{free_port()}/none", "papers")
    with pytest.raises(StoreUnavailableError, match=r"keyword store .*127\.0\.0\.1:\d+/none"):
        store.search("quokkas", 5)


def _counts(store: PostgresKeywordStore) -> tuple[dict[str, int], dict[str, int], tuple[Any, ...]]:
    """(df kept by the triggers, df recounted from the rows, (kept N, length; counted N, length))."""
    with store._transaction() as cursor:
        cursor.execute("SELECT term, df FROM scholia_papers_terms WHERE df > 0")
        kept = dict(cursor.fetchall())
        cursor.execute(
            "SELECT lexeme, count(*) FROM scholia_papers_chunks, unnest(lexemes) GROUP BY lexeme"
        )
        counted = dict(cursor.fetchall())
        cursor.execute(
            "SELECT t.n, t.total_length, c.n, c.length FROM scholia_papers_totals AS t, "
            "(SELECT count(*) AS n, coalesce(sum(length), 0) AS length "
            "FROM scholia_papers_chunks) AS c"
        )
        totals = cursor.fetchone()
    assert totals is not None
    return kept, counted, tuple(totals)


def test_document_frequencies_follow_every_write_and_are_filled_for_an_older_table(
    postgres_url: str,
) -> None:
    store = PostgresKeywordStore(postgres_url, "papers")
    store.build_from(ROWS)
    store.write_papers([("quokka", "h1b", [("quokka#0", "Quokkaformer v2\nOnly one chunk.")])])
    store.write_papers([("wombat", "h2", [("wombat#0", "Wombat nets\nBurrows, again.")])])
    store.delete_papers(["speech"])
    kept, counted, (n, length, real_n, real_length) = _counts(store)
    assert kept == counted and (n, length) == (real_n, real_length) == (2, 7)

    # A table an earlier version wrote (no df table yet): filled on first use.
    with store._transaction() as cursor:
        cursor.execute("DROP TABLE scholia_papers_terms, scholia_papers_totals")
        cursor.execute("DROP FUNCTION scholia_papers_count() CASCADE")
    store.close()
    older = PostgresKeywordStore(postgres_url, "papers")
    assert [hit.chunk_id for hit in older.search("wombat burrows", 5)] == ["wombat#0"]
    kept, counted, (n, length, real_n, real_length) = _counts(older)
    assert kept == counted and (n, length) == (real_n, real_length)


def test_a_small_candidate_budget_scores_the_rare_lexemes_chunks_against_all_lexemes(
    postgres_url: str,
) -> None:
    full = PostgresKeywordStore(postgres_url, "papers")
    rows = [*ROWS, *((f"filler#{i}", f"Networks trained on photos, {i}.", "h5") for i in range(9))]
    full.build_from(rows)
    bounded = PostgresKeywordStore(postgres_url, "papers", candidate_budget=1)
    query = "quokka networks trained on photos"
    exact = full.search(query, 3)
    assert [hit.chunk_id for hit in exact][:1] == ["quokka#0"]
    # Only the chunks with "quokka" are scored, with the same scores as the full query's.
    assert bounded.search(query, 3) == [hit for hit in exact if hit.chunk_id.startswith("quokka")]


# Writes batches of papers (and deletes some) until killed.
WRITER = """
import sys
from ingest.keyword_postgres import PostgresKeywordStore
store = PostgresKeywordStore(sys.argv[1], "papers")
for n in range(100000):
    text = f"Paper {n} on quokkas, wombats and drones number {n % 97}. " * (1 + n % 5)
    store.write_papers([(f"p{n}-{i}", "h", [(f"p{n}-{i}#0", text)]) for i in range(50)])
    store.delete_papers([f"p{n - 1}-{i}" for i in range(0, 50, 3)])
"""


def test_document_frequencies_survive_a_writer_killed_mid_transaction(postgres_url: str) -> None:
    store = PostgresKeywordStore(postgres_url, "papers")
    store.build_from(ROWS)
    root = Path(__file__).resolve().parents[2]
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, postgres_url],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        deadline = time.monotonic() + 60
        while len(_row_versions(store)) < 300 and time.monotonic() < deadline:
            assert writer.poll() is None, "the writer stopped by itself"
            time.sleep(0.05)
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    kept, counted, (n, length, real_n, real_length) = _counts(store)
    assert n > 300 and kept == counted and (n, length) == (real_n, real_length)
