"""A server (uvicorn) killed with SIGKILL during an upload's background ingest: restarted, the
job reads "interrupted", uploading the file again finishes it, and the index equals a clean run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from assistant.api.main import create_app
from assistant.api.services import build_services
from ingest.embed import Embedder
from ingest.pipeline import ingest_lock, open_store, run_ingest
from tests.fakes import FakeLLM
from tests.ingest.helpers import (
    HashEmbedder,
    keyword_state,
    make_settings,
    paper_records,
    snapshot,
    write_jsonl,
)
from tests.servers import free_port, wait_http

PROJECT_ROOT = Path(__file__).resolve().parents[3]
PAPERS = 120  # ~12 write rounds: the kill, within the first half, lands mid-ingest on any CPU
NDJSON = {"content-type": "application/x-ndjson"}


@contextmanager
def server(data_dir: Path, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`uvicorn` on the app factory, as `scholia serve` runs it (the LLM is never called)."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "SCHOLIA_DATA_DIR": str(data_dir),
        "SCHOLIA_EMBEDDING_BATCH_SIZE": "2",  # ~10 papers a write round: the kill lands in one
        "SCHOLIA_LLM_URL": "http://127.0.0.1:9/v1",
        "SCHOLIA_SERVER_RATE_LIMIT_PER_MINUTE": "0",
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "assistant.api.main:create_app"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", process, log, timeout=180)
        yield url, process
    finally:
        process.kill()
        process.wait()


def job(url: str, job_id: str) -> dict[str, Any]:
    state: dict[str, Any] = httpx.get(f"{url}/papers/jobs/{job_id}", timeout=30).json()
    return state


def test_a_server_killed_mid_ingest_then_a_second_upload_equals_a_clean_run(
    tmp_path: Path, embedder: Embedder
) -> None:
    source = write_jsonl(tmp_path / "corpus.jsonl", paper_records(PAPERS))
    body = source.read_bytes()
    killed = make_settings(tmp_path / "killed")
    log = tmp_path / "server.log"
    with server(killed.data_dir, log) as (url, process):
        started = httpx.post(f"{url}/papers", content=body, headers=NDJSON, timeout=60).json()
        again = httpx.post(f"{url}/papers", content=body, headers=NDJSON, timeout=60)
        assert again.status_code == 409  # one ingest at a time
        # The kill lands after a random number of papers, not a random time: a fast CPU
        # finished 40 papers within the second a time-based kill waited (CI, stop 24).
        kill_after = random.Random().randint(1, PAPERS // 2)
        deadline = time.monotonic() + 300
        while (state := job(url, started["id"]))["written"] < kill_after:
            assert state["state"] == "running" and time.monotonic() < deadline, state
            time.sleep(0.05)
        assert job(url, started["id"])["state"] == "running", "finished before the kill"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    with ingest_lock(killed.data_dir):  # the dead process's lock is gone with it
        pass

    # Restarted (in-process; the cheap embedder: ids, texts, metadata and BM25 do not depend on
    # the vectors, and the real model's cost was paid by the killed server).
    cheap = HashEmbedder(embedder)
    services = build_services(killed, llm=FakeLLM(), embedder=cheap)
    with TestClient(create_app(killed, services)) as client:
        interrupted = client.get(f"/papers/jobs/{started['id']}").json()
        assert interrupted["state"] == "interrupted" and "again" in interrupted["error"]
        done_before = interrupted["written"]
        rerun = client.post("/papers", content=body, headers=NDJSON).json()
        while (finished := client.get(f"/papers/jobs/{rerun['id']}").json())["state"] == "running":
            time.sleep(0.1)
        assert finished["state"] == "done", finished
        assert finished["added"] + finished["updated"] + finished["unchanged"] == PAPERS
        assert finished["unchanged"] >= done_before > 0 and not finished["rejected"]
        listed = client.get("/papers", params={"limit": 1}).json()
        assert listed["total"] == PAPERS and listed["index"]["papers"] == PAPERS

    clean = make_settings(tmp_path / "clean")
    run_ingest(clean, [source], embedder=cheap, log=lambda _: None)
    resumed_ids, resumed_docs, resumed_meta = snapshot(killed)
    clean_ids, clean_docs, clean_meta = snapshot(clean)
    assert resumed_ids == clean_ids and len(set(resumed_ids)) == len(resumed_ids)
    assert resumed_docs == clean_docs and resumed_meta == clean_meta
    assert keyword_state(killed) == keyword_state(clean)
    assert open_store(killed).manifest() == open_store(clean).manifest()
