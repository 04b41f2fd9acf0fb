"""run_ingest in-process: idempotence, updates, --sync, determinism, manifest, write errors."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from chromadb.api.models.Collection import Collection

from ingest.embed import Embedder
from ingest.keyword import KeywordIndex
from ingest.pipeline import IngestWriteError, keyword_index, open_store, run_ingest
from ingest.store import ChromaStore, IndexMismatchError, Manifest
from scholia.settings import ChunkingSettings, EmbeddingSettings
from tests.ingest.helpers import (
    HashEmbedder,
    chunk_ids_of,
    keyword_state,
    make_settings,
    paper_records,
    snapshot,
    write_jsonl,
)

WRITES = ("add", "upsert", "update", "delete", "modify")


def _forbid_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("ingest wrote to Chroma")

    for name in WRITES:
        monkeypatch.setattr(Collection, name, refuse)


def _ingest(settings: Any, paths: list[Path], embedder: Embedder, **options: Any) -> Any:
    lines: list[str] = []
    report: Any = run_ingest(settings, paths, embedder=embedder, log=lines.append, **options)
    report.lines = lines
    return report


def test_reingest_writes_nothing(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path / "data")
    source = write_jsonl(tmp_path / "p.jsonl", paper_records(5))
    first = _ingest(settings, [source], embedder)
    assert (first.added, first.updated, first.unchanged, first.removed) == (5, 0, 0, 0)
    assert first.chunks_written > 5 and first.keywords_rebuilt
    before = snapshot(settings, embeddings=True)
    bm25_before = keyword_state(settings)
    state_file = keyword_index(settings).folder / "state.json"
    stat_before = state_file.stat()

    _forbid_writes(monkeypatch)
    again = _ingest(settings, [source], embedder, sync=True)
    assert (again.added, again.updated, again.unchanged, again.removed) == (0, 0, 5, 0)
    assert again.chunks_written == 0 and not again.keywords_rebuilt and not again.rejected
    after = snapshot(settings, embeddings=True)
    assert before[:3] == after[:3]
    assert np.array_equal(before[3], after[3])
    assert keyword_state(settings) == bm25_before
    assert state_file.stat().st_ino == stat_before.st_ino  # the BM25 index was not replaced


def test_changed_abstract_replaces_its_chunks_without_orphans(
    tmp_path: Path, embedder: Embedder
) -> None:
    settings = make_settings(tmp_path / "data")
    records = paper_records(3)
    long_abstract = " ".join(
        f"Sentence {i} describes the zebrafinch protocol in detail." for i in range(80)
    )
    records[1]["abstract"] = long_abstract
    source = write_jsonl(tmp_path / "p.jsonl", records)
    _ingest(settings, [source], embedder)
    found = open_store(settings).collection.get(
        where={"title": records[1]["title"]}, include=["metadatas"]
    )
    paper_id = (found["metadatas"] or [])[0]["paper_id"]
    old_ids = chunk_ids_of(settings, str(paper_id))
    assert len(old_ids) >= 3
    untouched = [
        row for row in zip(*snapshot(settings), strict=True) if row[2]["paper_id"] != paper_id
    ]

    reader = KeywordIndex(keyword_index(settings).folder)  # e.g. a running server's
    assert reader.search("zebrafinch", 5)[0].chunk_id.startswith(str(paper_id))
    records[1]["abstract"] = "A short replacement abstract about the quokkanet method. " * 3
    write_jsonl(source, records)
    report = _ingest(settings, [source], embedder)
    assert (report.added, report.updated, report.unchanged) == (0, 1, 2)

    ids, documents, metadatas = snapshot(settings)
    mine = [
        (i, d, m)
        for i, d, m in zip(ids, documents, metadatas, strict=True)
        if m["paper_id"] == paper_id
    ]
    assert [i for i, _, _ in mine] == [f"{paper_id}#0"]  # no orphaned #1, #2…
    assert all("quokkanet" in d and "zebrafinch" not in d for _, d, _ in mine)
    assert {m["paper_chunks"] for _, _, m in mine} == {1}
    assert [
        row for row in zip(ids, documents, metadatas, strict=True) if row[2]["paper_id"] != paper_id
    ] == untouched
    assert [hit.chunk_id for hit in reader.search("quokkanet", 5)] == [f"{paper_id}#0"]
    assert reader.search("zebrafinch", 5) == []  # the reader reloaded the new version


def test_sync_removes_papers_no_longer_in_the_sources(tmp_path: Path, embedder: Embedder) -> None:
    settings = make_settings(tmp_path / "data")
    records = paper_records(5)
    everything = write_jsonl(tmp_path / "all.jsonl", records)
    fewer = write_jsonl(tmp_path / "fewer.jsonl", records[:3])
    _ingest(settings, [everything], embedder)

    kept = _ingest(settings, [fewer], embedder)  # without --sync nothing is removed
    assert kept.removed == 0 and len({m["paper_id"] for m in snapshot(settings)[2]}) == 5

    bad = tmp_path / "bad.jsonl"
    bad.write_text(fewer.read_text() + "{broken\n")
    skipped = _ingest(settings, [bad], embedder, sync=True)  # a rejected record blocks removal
    assert skipped.removed == 0 and skipped.sync_skipped
    assert len({m["paper_id"] for m in snapshot(settings)[2]}) == 5

    synced = _ingest(settings, [fewer], embedder, sync=True)
    assert (synced.removed, synced.unchanged) == (2, 3)
    ids, _, metadatas = snapshot(settings)
    titles = {m["title"] for m in metadatas}
    assert titles == {r["title"] for r in records[:3]}
    folder = keyword_index(settings).folder
    assert json.loads((folder / "chunk_ids.json").read_text()) == ids


def test_two_ingests_of_one_corpus_give_identical_indexes(
    tmp_path: Path, embedder: Embedder
) -> None:
    records = paper_records(6)
    source = write_jsonl(tmp_path / "p.jsonl", records)
    one = make_settings(tmp_path / "one")
    two = make_settings(tmp_path / "two", embedding=EmbeddingSettings(batch_size=2))
    _ingest(one, [source], embedder)
    # The second gets there another way: the last papers first, in smaller batches.
    _ingest(two, [write_jsonl(tmp_path / "tail.jsonl", records[3:])], embedder)
    _ingest(two, [source], embedder)
    a, b = snapshot(one, embeddings=True), snapshot(two, embeddings=True)
    assert a[0] == b[0] and a[1] == b[1] and a[2] == b[2]
    assert np.allclose(a[3], b[3], atol=1e-5)
    assert keyword_state(one) == keyword_state(two)
    assert keyword_state(one)[1] is not None


def test_index_built_with_other_settings_is_refused_until_rebuild(
    tmp_path: Path, embedder: Embedder
) -> None:
    source = write_jsonl(tmp_path / "p.jsonl", paper_records(3))
    settings = make_settings(tmp_path / "data")
    _ingest(settings, [source], embedder)
    before = snapshot(settings)

    other = make_settings(tmp_path / "data", chunking=ChunkingSettings(max_tokens=128))
    with pytest.raises(IndexMismatchError) as refused:
        _ingest(other, [source], embedder)
    message = str(refused.value)
    assert "chunk_max_tokens: index has 256, settings give 128" in message
    assert "scholia ingest --rebuild" in message
    assert snapshot(settings) == before

    rebuilt = _ingest(other, [source], embedder, rebuild=True)
    assert rebuilt.added == 3
    assert open_store(other).manifest() == Manifest(
        embed_model="all-MiniLM-L6-v2", embed_dim=384, chunk_max_tokens=128, chunk_overlap_tokens=32
    )
    ids, documents, _ = snapshot(other)
    assert len(ids) > len(before[0])  # smaller chunks, and none of the old ones left
    assert all(embedder.count_tokens(d) + 2 <= 128 for d in documents)
    state, _ = keyword_state(other)
    assert state["chunks"] == len(ids)


def test_other_embedding_model_and_missing_manifest_are_refused(
    tmp_path: Path, embedder: Embedder
) -> None:
    source = write_jsonl(tmp_path / "p.jsonl", paper_records(2))
    settings = make_settings(tmp_path / "data")
    _ingest(settings, [source], embedder)
    store = open_store(settings)
    store.write_manifest(Manifest("all-mpnet-base-v2", 768, 256, 32))
    with pytest.raises(
        IndexMismatchError, match=r"embed_model: index has 'all-mpnet-base-v2'.*--rebuild"
    ):
        _ingest(settings, [source], embedder)

    store.collection.modify(metadata={"unrelated": "x"})  # data without any manifest
    store = open_store(settings)
    assert store.manifest() is None
    with pytest.raises(IndexMismatchError, match="no Scholia manifest"):
        _ingest(settings, [source], embedder)


def test_a_half_written_or_mixed_paper_is_repaired(tmp_path: Path, embedder: Embedder) -> None:
    records = paper_records(4)
    records[0]["abstract"] = " ".join(f"Claim {i} about sparse attention holds." for i in range(70))
    source = write_jsonl(tmp_path / "p.jsonl", records)
    clean = make_settings(tmp_path / "clean")
    _ingest(clean, [source], embedder)
    damaged = make_settings(tmp_path / "damaged")
    _ingest(damaged, [source], embedder)

    collection = open_store(damaged).collection
    rows = collection.get(include=["metadatas", "documents", "embeddings"])
    by_paper: dict[str, list[int]] = {}
    for position, metadata in enumerate(rows["metadatas"] or []):
        by_paper.setdefault(str(metadata["paper_id"]), []).append(position)
    multi = [positions for positions in by_paper.values() if len(positions) >= 3]
    pairs = [positions for positions in by_paper.values() if len(positions) == 2]
    # one paper lost its last chunk (a write cut short)…
    collection.delete(ids=[rows["ids"][multi[0][-1]]])
    # …another has its second chunk from an older version (an update cut short); its first
    # chunk alone looks current.
    victim = next(
        position for position in pairs[0] if (rows["metadatas"] or [])[position]["chunk_index"] == 1
    )
    stale = dict((rows["metadatas"] or [])[victim])
    stale["paper_hash"] = "0" * 64
    collection.update(
        ids=[rows["ids"][victim]],
        metadatas=[stale],
        documents=["old text"],
        embeddings=[np.asarray(rows["embeddings"])[victim]],
    )

    report = _ingest(damaged, [source], embedder)
    assert (report.added, report.updated, report.unchanged) == (0, 2, 2)
    assert snapshot(damaged) == snapshot(clean)
    assert keyword_state(damaged) == keyword_state(clean)


def test_chroma_write_error_is_clear_and_keeps_the_previous_index(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path / "data", embedding=EmbeddingSettings(batch_size=1))
    records = paper_records(6)
    source = write_jsonl(tmp_path / "p.jsonl", records[:4])
    _ingest(settings, [source], embedder)
    before = snapshot(settings)
    bm25_before = keyword_state(settings)

    changed = [dict(record) for record in records]
    changed[0]["abstract"] += " An added closing sentence changes this paper."
    changed[2]["abstract"] = "Entirely new text for this paper, which now says something else. " * 2
    write_jsonl(source, changed)
    real_upsert = Collection.upsert

    def disk_full(*_: Any, **__: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Collection, "upsert", disk_full)
    with pytest.raises(IngestWriteError) as failed:
        _ingest(settings, [source], embedder)
    message = str(failed.value)
    assert "No space left on device" in message and "re-run `scholia ingest`" in message
    assert snapshot(settings) == before  # updated papers keep their previous version
    assert keyword_state(settings) == bm25_before

    monkeypatch.setattr(Collection, "upsert", real_upsert)
    report = _ingest(settings, [source], embedder)
    assert (report.added, report.updated, report.unchanged) == (2, 2, 2)
    clean = make_settings(tmp_path / "clean")
    _ingest(clean, [source], embedder)
    assert snapshot(settings) == snapshot(clean)
    assert keyword_state(settings) == keyword_state(clean)


def test_keyword_index_write_error_keeps_the_previous_keyword_index(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path / "data")
    records = paper_records(3)
    source = write_jsonl(tmp_path / "p.jsonl", records[:2])
    _ingest(settings, [source], embedder)
    bm25_before = keyword_state(settings)
    folder = keyword_index(settings).folder
    listing = sorted(path.name for path in folder.parent.iterdir())

    def disk_full(*_: Any, **__: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("bm25s.BM25.save", disk_full)
    write_jsonl(source, records)
    with pytest.raises(
        IngestWriteError, match=r"keyword index.*previous one is unchanged.*No space left"
    ):
        _ingest(settings, [source], embedder)
    assert keyword_state(settings) == bm25_before
    assert sorted(path.name for path in folder.parent.iterdir()) == listing  # no leftovers

    monkeypatch.undo()
    report = _ingest(settings, [source], embedder)  # Chroma is complete; BM25 catches up
    assert report.unchanged == 3 and report.chunks_written == 0 and report.keywords_rebuilt
    state, _ = keyword_state(settings)
    assert state["chunks"] == open_store(settings).count()


def test_records_that_cannot_be_chunked_are_rejected_and_the_rest_ingested(
    tmp_path: Path, embedder: Embedder
) -> None:
    records = paper_records(3)
    records[1]["title"] = "An endless title " * 80
    source = write_jsonl(tmp_path / "p.jsonl", records)
    settings = make_settings(tmp_path / "data")
    report = _ingest(settings, [source], embedder)
    assert report.added == 2 and len(report.rejected) == 1
    assert str(report.rejected[0]).startswith(f"{source}:2: title of")
    assert any(line.startswith(f"rejected {source}:2:") for line in report.lines)
    assert {m["title"] for m in snapshot(settings)[2]} == {records[0]["title"], records[2]["title"]}


def test_progress_lines_without_a_terminal_and_a_bar_with_one(
    tmp_path: Path, embedder: Embedder, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(tmp_path / "p.jsonl", paper_records(4))
    settings = make_settings(tmp_path / "lines", embedding=EmbeddingSettings(batch_size=1))
    report = _ingest(settings, [source], embedder, progress=False)
    progress = [line for line in report.lines if line.startswith("ingest: ")]
    assert progress[0].startswith("ingest: ") and progress[-1].startswith("ingest: 4/4 papers, ")
    assert progress[-1].endswith(" docs/s")
    assert report.lines[-1].startswith("added 4, updated 0, unchanged 0, removed 0, rejected 0")
    assert "doc/s" not in capsys.readouterr().err

    bar = _ingest(make_settings(tmp_path / "bar"), [source], embedder, progress=True)
    assert not [line for line in bar.lines if line.startswith("ingest: ")]
    err = capsys.readouterr().err
    assert "ingest: 100%" in err and "4/4" in err and "doc/s" in err


def test_jsonl_metadata_becomes_filterable_chunk_metadata(
    tmp_path: Path, embedder: Embedder
) -> None:
    records = paper_records(3)
    source = write_jsonl(tmp_path / "p.jsonl", records)
    settings = make_settings(tmp_path / "data")
    _ingest(settings, [source], embedder)
    store = open_store(settings)
    hits = store.query(embedder.embed_query(records[1]["abstract"][:200]), 5, {"citations": 1})
    assert hits and {hit.title for hit in hits} == {records[1]["title"]}
    assert hits[0].metadata["authors"] == "Author 1; Someone Else"
    assert hits[0].metadata["published"] == records[1]["published"]


def test_a_paper_split_across_writes_counts_only_when_every_part_landed(
    tmp_path: Path, hash_embedder: HashEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = paper_records(3)
    records[1]["abstract"] = " ".join(f"Finding {i} on graph pruning is stated." for i in range(90))
    source = write_jsonl(tmp_path / "p.jsonl", records)
    settings = make_settings(tmp_path / "data")
    monkeypatch.setattr(ChromaStore, "max_batch_size", lambda self: 3)  # a paper spans upserts
    real_upsert = Collection.upsert
    calls: list[int] = []

    def dies_midway(self: Collection, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(kwargs["ids"]))
        if len(calls) == 3:
            raise OSError(errno.EIO, "Input/output error")
        return real_upsert(self, *args, **kwargs)

    monkeypatch.setattr(Collection, "upsert", dies_midway)
    with pytest.raises(IngestWriteError):
        _ingest(settings, [source], hash_embedder)
    states = open_store(settings).paper_states()
    assert max(calls) <= 3
    assert sum(state.stored_chunks for state in states.values()) == sum(calls[:2])
    assert any(not state.complete for state in states.values())

    monkeypatch.setattr(Collection, "upsert", real_upsert)
    report = _ingest(settings, [source], hash_embedder)
    assert report.unchanged + report.updated + report.added == 3 and report.chunks_written > 0
    clean = make_settings(tmp_path / "clean")
    _ingest(clean, [source], hash_embedder)
    assert snapshot(settings) == snapshot(clean)
    assert all(state.complete for state in open_store(settings).paper_states().values())
