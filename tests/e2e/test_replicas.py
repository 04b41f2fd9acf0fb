"""Two app replicas on one Chroma server and one PostgreSQL keyword store: a paper uploaded
through one is found through the other at once, by a word only it holds and by meaning.

No LLM is needed (/search and the library's search): the apps point at a port nobody serves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from ingest.embed import Embedder
from ingest.keyword_postgres import PostgresKeywordStore
from ingest.pipeline import run_ingest
from scholia.settings import IndexSettings, Settings
from tests.ingest.helpers import paper_records, write_jsonl
from tests.servers import finished_job, free_port, scholia_serve, wait_http

pytestmark = [pytest.mark.chroma_server, pytest.mark.postgres]

START_TIMEOUT_S = 300
# "Tumbleweeds" and "Mojave" are in no bundled abstract; "Zorblaxian" is in no dictionary.
TUMBLEWEED = {
    "id": "tumbleweed-replicas",
    "title": "Counting Tumbleweeds in the Mojave with Drones",
    "abstract": "We count tumbleweeds rolling across the Mojave desert from drone footage. "
    "Our Zorblaxian tracker follows 1,204 tumbleweeds through dust storms and reaches 88 percent "
    "precision on a single laptop.",
}
BY_MEANING = "spotting wind-blown dry shrubs in aerial video"


@contextmanager
def replica(folder: Path, env: dict[str, str]) -> Iterator[str]:
    """`scholia serve` with `env`, data in `folder`; its URL, not yet waited for."""
    folder.mkdir(parents=True)
    with scholia_serve(folder, env, folder / "serve.log") as (url, _):
        yield url


def _library(url: str, query: str) -> list[str]:
    response = httpx.get(url + "/papers", params={"q": query}, timeout=60)
    assert response.status_code == 200, response.text
    return [paper["id"] for paper in response.json()["papers"]]


def _search(url: str, query: str) -> list[str]:
    response = httpx.post(url + "/search", json={"query": query, "top_k": 3}, timeout=60)
    assert response.status_code == 200, response.text
    return [source["id"] for source in response.json()["results"]]


def test_a_paper_ingested_through_one_replica_is_found_through_the_other(
    chroma_url: str, postgres_url: str, tmp_path: Path, embedder: Embedder
) -> None:
    index = IndexSettings(chroma_url=chroma_url, keyword="postgres", keyword_url=postgres_url)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", paper_records(12))
    # The shared stores are filled once, before the replicas start (each would ingest an empty
    # index at start-up).
    run_ingest(Settings(data_dir=tmp_path / "ingest", corpus=corpus, index=index), [corpus],
               embedder=embedder, log=lambda _: None)  # fmt: skip
    env = {
        "SCHOLIA_CORPUS": str(corpus),
        "SCHOLIA_INDEX_CHROMA_URL": chroma_url,
        "SCHOLIA_INDEX_KEYWORD": "postgres",
        "SCHOLIA_INDEX_KEYWORD_URL": postgres_url,
        "SCHOLIA_LLM_URL": f"http://127.0.0.1:{free_port()}/v1",
        "SCHOLIA_LLM_WARM_UP": "false",
    }
    with ExitStack() as stack:
        one = stack.enter_context(replica(tmp_path / "one", env))
        other = stack.enter_context(replica(tmp_path / "other", env))
        for url, name in ((one, "one"), (other, "other")):  # both started: they load at once
            wait_http(url + "/health", None, tmp_path / name / "serve.log", START_TIMEOUT_S, 1)
        assert _library(other, "Zorblaxian") == []

        upload = httpx.post(
            one + "/papers",
            content=json.dumps(TUMBLEWEED) + "\n",
            headers={"content-type": "application/x-ndjson"},
            timeout=60,
        )
        assert upload.status_code == 202, upload.text
        job = finished_job(lambda path: httpx.get(one + path).json(), upload.json()["id"], 120, 1)
        assert job["state"] == "done" and job["added"] == 1, job

        # The library's word search asks the keyword store alone (the title lacks the word).
        assert _library(other, "Zorblaxian") == [TUMBLEWEED["id"]]
        # No word in common with the paper: only the dense ranking can bring it (hybrid fusion
        # may put a paper sharing a word, e.g. "video", above it).
        keyword_hits = PostgresKeywordStore(postgres_url, "papers").search(BY_MEANING, 50)
        assert not [hit for hit in keyword_hits if hit.chunk_id.startswith(TUMBLEWEED["id"])]
        assert TUMBLEWEED["id"] in _search(other, BY_MEANING)
