"""Ingest and search against a real `chroma run` server on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ingest.embed import Embedder
from ingest.pipeline import keyword_index, open_store
from tests.ingest.helpers import cli_ingest, make_settings, paper_records, snapshot, write_jsonl

pytestmark = pytest.mark.chroma_server


def _chroma_cli() -> str:
    beside = Path(sys.executable).with_name("chroma")
    found = str(beside) if beside.is_file() else shutil.which("chroma")
    if not found:
        pytest.skip("the `chroma` command is not installed")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def chroma_url(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    home = tmp_path / "server-home"
    home.mkdir()
    log = (tmp_path / "chroma-server.log").open("wb")
    command = [_chroma_cli(), "run", "--path", str(tmp_path / "server-db")]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "HOME": str(home), "ANONYMIZED_TELEMETRY": "False"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "chroma run did not start: " + (tmp_path / "chroma-server.log").read_text()
                )
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


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
    result = cli_ingest("--chroma-url", f"http://127.0.0.1:{_free_port()}", source)
    assert result.exit_code == 2
    assert "unreachable" in result.stderr
