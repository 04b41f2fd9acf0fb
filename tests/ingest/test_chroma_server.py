"""Ingest and search against a real `chroma run` server on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.embed import Embedder
from ingest.pipeline import keyword_index, open_store
from ingest.store import StoreUnavailableError
from tests.ingest.helpers import cli_ingest, make_settings, paper_records, snapshot, write_jsonl
from tests.servers import ChromaServer, free_port

pytestmark = pytest.mark.chroma_server


def test_ingest_through_a_chroma_server_is_idempotent_and_searchable(
    chroma_url: str, data_dir: Path, tmp_path: Path, embedder: Embedder
) -> None:
    records = paper_records(4)
    source = write_jsonl(tmp_path / "p.jsonl", records)
    first = cli_ingest("--chroma-url", chroma_url, source)
    assert first.exit_code == 0, first.output
    assert "added 4, updated 0, unchanged 0, removed 0, rejected 0" in first.stdout
    settings = make_settings(data_dir).model_copy(
        update={
            "index": make_settings(data_dir).index.model_copy(update={"chroma_url": chroma_url})
        }
    )
    before = snapshot(settings)
    assert len({m["paper_id"] for m in before[2]}) == 4
    assert not (data_dir / "chroma").exists()  # nothing went to the embedded store

    again = cli_ingest("--chroma-url", chroma_url, source)
    assert again.exit_code == 0, again.output
    assert (
        "added 0, updated 0, unchanged 4, removed 0, rejected 0 (0 chunks written" in again.stdout
    )
    assert snapshot(settings) == before

    store = open_store(settings)
    hits = store.query(embedder.embed_query(records[2]["title"]), 3)
    assert hits[0].title == records[2]["title"]
    assert 0.3 < hits[0].score <= 1.0
    filtered = store.query(embedder.embed_query(records[2]["title"]), 3, {"citations": 3})
    assert {hit.title for hit in filtered} == {records[3]["title"]}
    keywords = keyword_index(settings)
    assert keywords.folder.name.endswith("-server")
    state = keywords.state()
    assert state is not None and state["chunks"] == len(before[0])


def test_an_unreachable_server_is_a_clear_error(data_dir: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "p.jsonl", paper_records(1))
    result = cli_ingest("--chroma-url", f"http://127.0.0.1:{free_port()}", source)
    assert result.exit_code == 2
    assert "unreachable" in result.stderr


def test_a_stopped_server_is_unavailable_and_the_same_store_works_once_it_is_back(
    chroma_server: ChromaServer, data_dir: Path, tmp_path: Path, embedder: Embedder
) -> None:
    records = paper_records(2)
    source = write_jsonl(tmp_path / "p.jsonl", records)
    assert cli_ingest("--chroma-url", chroma_server.url, source).exit_code == 0
    settings = make_settings(data_dir)
    settings = settings.model_copy(
        update={"index": settings.index.model_copy(update={"chroma_url": chroma_server.url})}
    )
    store = open_store(settings)
    chunks = store.count()
    query = embedder.embed_query(records[1]["title"])

    chroma_server.stop()
    address = f"Chroma server at 127.0.0.1:{chroma_server.port} does not answer"
    for read in (store.count, lambda: store.query(query, 3), lambda: store.papers(["x"])):
        with pytest.raises(StoreUnavailableError, match=address):
            read()

    chroma_server.start()  # same port, same data path
    assert store.count() == chunks
    assert store.query(query, 3)[0].title == records[1]["title"]
