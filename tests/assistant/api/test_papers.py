"""/papers: list and search the index, add papers in the background, remove them; the limits."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from assistant.api.main import create_app
from assistant.api.services import build_services
from ingest.embed import Embedder
from ingest.pipeline import ingest_lock, keyword_index, open_store, run_ingest
from scholia.settings import Settings
from tests.fakes import FakeLLM
from tests.ingest.helpers import paper_records, write_jsonl
from tests.servers import finished_job

QUOKKA = {
    "id": "quokkanet",
    "title": "QuokkaNet: Counting Quokkas from Drone Images",
    "abstract": "Quokkas live on Rottnest Island. QuokkaNet counted 12,400 quokkas on Rottnest "
    "Island from drone images, with a counting error below three percent. It needs one GPU.",
    "published": "2031",
}
QUOKKA_Q = "How many quokkas did QuokkaNet count on Rottnest Island?"
NDJSON = {"content-type": "application/x-ndjson"}


def jsonl(*records: Any) -> bytes:
    return "".join(
        (record if isinstance(record, str) else json.dumps(record)) + "\n" for record in records
    ).encode()


@pytest.fixture
def library(tmp_path: Path, embedder: Embedder) -> Iterator[tuple[TestClient, Settings]]:
    """An app over its own index of four bundled papers (the tests add and remove papers)."""
    settings = Settings(data_dir=tmp_path / "data")
    seed = write_jsonl(tmp_path / "seed.jsonl", paper_records(4))
    run_ingest(settings, [seed], embedder=embedder, log=lambda _: None)
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"max_upload_bytes": 4096})}
    )
    services = build_services(settings, llm=FakeLLM(), embedder=embedder)
    with TestClient(create_app(settings, services), raise_server_exceptions=False) as client:
        yield client, settings


def finished(client: TestClient, job_id: str, timeout: float = 120) -> dict[str, Any]:
    return finished_job(lambda path: client.get(path).json(), job_id, timeout, 0.1)


def test_the_list_pages_searches_and_describes_the_index(
    library: tuple[TestClient, Settings],
) -> None:
    client, _ = library
    listed = client.get("/papers", params={"limit": 3}).json()
    assert listed["total"] == 4 and len(listed["papers"]) == 3 and listed["offset"] == 0
    index = listed["index"]
    assert index["papers"] == 4 and index["chunks"] >= 4
    assert index["embed_model"] and index["embed_dim"] == 384 and index["last_ingest"]
    paper = listed["papers"][0]
    assert set(paper) == {"id", "title", "chunks", "ingested_at", "complete"}
    assert paper["ingested_at"] and paper["complete"] and paper["chunks"] >= 1
    rest = client.get("/papers", params={"offset": 3, "limit": 3}).json()
    assert len(rest["papers"]) == 1 and rest["total"] == 4
    assert {p["id"] for p in listed["papers"] + rest["papers"]} == {
        p["id"] for p in client.get("/papers").json()["papers"]
    }

    title = paper["title"]
    by_title = client.get("/papers", params={"q": " ".join(title.split()[:2]).upper()}).json()
    assert by_title["papers"][0]["id"] == paper["id"]
    detail = client.get(f"/papers/{paper['id']}").json()
    word = max(detail["chunks"][0]["text"].split("\n", 1)[1].split(), key=len).strip(".,;:()")
    by_words = client.get("/papers", params={"q": word}).json()
    assert paper["id"] in [p["id"] for p in by_words["papers"]]
    assert client.get("/papers", params={"q": "zzqxj nonexistentword"}).json()["total"] == 0
    assert client.get("/papers", params={"limit": 0}).status_code == 422


def test_a_paper_shows_its_chunks_and_the_filters_that_scope_a_question(
    library: tuple[TestClient, Settings],
) -> None:
    client, _ = library
    paper = client.get("/papers").json()["papers"][0]
    detail = client.get(f"/papers/{paper['id']}").json()
    assert detail["title"] == paper["title"] and len(detail["chunks"]) == paper["chunks"]
    assert [c["index"] for c in detail["chunks"]] == list(range(paper["chunks"]))
    assert detail["metadata"]["published"] and "paper_hash" not in detail["metadata"]
    assert detail["filters"] == {"paper_id": paper["id"]}
    scoped = client.post("/search", json={"query": "model", "filters": detail["filters"]})
    assert [s["id"] for s in scoped.json()["results"]] == [paper["id"]]
    assert client.get("/papers/no-such-paper").status_code == 404


def test_an_upload_is_ingested_in_the_background_and_answers_at_once(
    library: tuple[TestClient, Settings],
) -> None:
    client, settings = library
    before = client.post("/ask", json={"question": QUOKKA_Q}).json()
    assert "12,400" not in before["answer"]
    body = jsonl(QUOKKA, "{not json", {"title": "no abstract"}, paper_records(1)[0])
    started = client.post("/papers", content=body, headers=NDJSON, params={"name": "new.jsonl"})
    assert started.status_code == 202, started.text
    job = started.json()
    assert started.headers["location"] == f"/papers/jobs/{job['id']}"
    assert job["papers"] == 2 and job["file"] == "new.jsonl"
    assert [(r["line"], r["reason"][:12]) for r in job["rejected"]] == [
        (2, "invalid JSON"),
        (3, "missing or e"),
    ]
    done = finished(client, job["id"])
    assert done["state"] == "done", done
    assert (done["added"], done["unchanged"], done["written"], done["to_write"]) == (1, 1, 1, 1)
    assert len(done["rejected"]) == 2 and done["finished_at"]

    listed = client.get("/papers").json()
    assert listed["total"] == 5 and listed["papers"][0]["id"] == "quokkanet"
    answer = client.post("/ask", json={"question": QUOKKA_Q}).json()
    assert "12,400" in answer["answer"] and not answer["declined"]
    assert answer["sources"][answer["citations"][0] - 1]["id"] == "quokkanet"
    keyword = client.post("/search", json={"query": "quokkas Rottnest drone"}).json()
    assert keyword["results"][0]["id"] == "quokkanet"
    # The keyword index of the running app holds the new paper (not only the dense one).
    hits = keyword_index(settings).search("quokkas Rottnest", 5)
    assert hits and hits[0].chunk_id.startswith("quokkanet#")
    assert not list(settings.uploads_dir.glob("*.jsonl"))  # a finished upload is not kept


def test_the_papers_page_format_is_accepted_as_text(library: tuple[TestClient, Settings]) -> None:
    client, _ = library
    text = f"Subscribe\n\n{QUOKKA['title']}\n{QUOKKA['abstract']} " + "More words. " * 10
    started = client.post("/papers", content=text.encode(), headers={"content-type": "text/plain"})
    assert started.status_code == 202, started.text
    assert finished(client, started.json()["id"])["added"] == 1
    assert client.get("/papers", params={"q": "quokkanet"}).json()["total"] == 1


def test_bad_uploads_are_refused_with_the_reason(library: tuple[TestClient, Settings]) -> None:
    client, settings = library
    wrong_type = client.post(
        "/papers", content=jsonl(QUOKKA), headers={"content-type": "application/json"}
    )
    assert wrong_type.status_code == 415 and "application/x-ndjson" in wrong_type.json()["detail"]
    assert client.post("/papers", content=jsonl(QUOKKA)).status_code == 415  # no content type
    too_big = client.post("/papers", content=b"x" * 5000, headers=NDJSON)
    assert too_big.status_code == 413 and "4096" in too_big.json()["detail"]
    nothing = client.post("/papers", content=jsonl("[1]", {"title": "t"}), headers=NDJSON)
    assert nothing.status_code == 422
    assert [r["line"] for r in nothing.json()["rejected"]] == [1, 2]
    latin1 = client.post(
        "/papers", content=b"Caf\xe9 " * 50, headers={"content-type": "text/plain"}
    )
    assert latin1.status_code == 422 and "utf-8" in latin1.json()["detail"]
    assert client.get("/papers").json()["total"] == 4
    assert not list(settings.uploads_dir.glob("*.*"))  # refused uploads are not kept
    assert client.get("/papers/jobs/0123456789abcdef").status_code == 404
    assert client.get("/papers/jobs/..%2F..%2Fetc").status_code == 404


def test_one_ingest_or_removal_at_a_time(library: tuple[TestClient, Settings]) -> None:
    client, settings = library
    paper_id = client.get("/papers").json()["papers"][0]["id"]
    with ingest_lock(settings.data_dir):  # as a running `scholia ingest` holds it
        added = client.post("/papers", content=jsonl(QUOKKA), headers=NDJSON)
        removed = client.delete(f"/papers/{paper_id}")
    assert added.status_code == removed.status_code == 409
    assert "running" in added.json()["detail"]
    assert client.get("/papers").json()["total"] == 4
    assert not list(settings.uploads_dir.glob("*.jsonl"))


def test_a_second_upload_while_one_runs_gets_409(library: tuple[TestClient, Settings]) -> None:
    client, _ = library
    many = jsonl(*[{"title": f"Paper {n}", "abstract": "Words " * 60} for n in range(8)])
    first = client.post("/papers", content=many, headers=NDJSON)
    second = client.post("/papers", content=jsonl(QUOKKA), headers=NDJSON)
    assert first.status_code == 202
    if (
        finished_already := client.get(f"/papers/jobs/{first.json()['id']}").json()["state"]
        != "running"
    ):
        pytest.skip("the first ingest finished before the second upload")  # pragma: no cover
    assert second.status_code == 409, finished_already
    assert finished(client, first.json()["id"])["state"] == "done"


def test_a_removed_paper_is_gone_from_both_indexes(library: tuple[TestClient, Settings]) -> None:
    client, settings = library
    paper = client.get("/papers").json()["papers"][0]
    title_words = paper["title"]
    assert paper["id"] in [
        s["id"] for s in client.post("/search", json={"query": title_words}).json()["results"]
    ]
    removed = client.delete(f"/papers/{paper['id']}")
    assert removed.status_code == 200 and removed.json() == {"removed": paper["id"], "papers": 3}
    assert client.get(f"/papers/{paper['id']}").status_code == 404
    assert client.delete(f"/papers/{paper['id']}").status_code == 404
    assert client.get("/papers").json()["total"] == 3
    results = client.post("/search", json={"query": title_words}).json()["results"]
    assert paper["id"] not in [s["id"] for s in results]
    keywords = keyword_index(settings)
    assert not [
        h for h in keywords.search(title_words, 50) if h.chunk_id.startswith(paper["id"] + "#")
    ]
    # The keyword index records exactly what Chroma holds; the manifest is unchanged.
    scan = open_store(settings).scan()
    assert keywords.state() == {
        "fingerprint": scan.fingerprint,
        "chunks": sum(s.stored_chunks for s in scan.states.values()),
    }
    assert open_store(settings).manifest() is not None


def test_adding_and_removing_need_the_api_key_when_one_is_set(
    tmp_path: Path, embedder: Embedder
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"api_key": SecretStr("s3cret")})}
    )
    services = build_services(settings, llm=FakeLLM(), embedder=embedder)
    with TestClient(create_app(settings, services)) as client:
        assert client.post("/papers", content=jsonl(QUOKKA), headers=NDJSON).status_code == 401
        assert client.delete("/papers/x").status_code == 401
        assert client.get("/papers").status_code == 401
        auth = {"authorization": "Bearer s3cret"}
        listed = client.get("/papers", headers=auth).json()
        assert listed["total"] == 0 and listed["index"]["last_ingest"] is None
        started = client.post("/papers", content=jsonl(QUOKKA), headers={**NDJSON, **auth})
        assert started.status_code == 202
        job = started.json()["id"]
        deadline = time.monotonic() + 60
        while client.get(f"/papers/jobs/{job}", headers=auth).json()["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert client.delete("/papers/quokkanet", headers=auth).status_code == 200
