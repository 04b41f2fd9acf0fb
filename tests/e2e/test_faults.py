"""Faults, for real: vLLM killed in the middle of answering, and the Chroma server stopped.

Each must end in a 503 with a clear detail (and, when retrieval worked, the sources), never a
500 or a hang, and the app must serve again once the dependency is back, without a restart.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.conftest import LiveServer, scholia_app
from tests.servers import ChromaServer, wait_http

pytestmark = pytest.mark.e2e

PRODIFF_Q = "How many iterations does ProDiff need to synthesize high-fidelity mel-spectrograms?"
# Asked by no other test, with 20 sources: a prompt of ~3,500 uncached tokens, so the prefill
# alone keeps vLLM busy for many seconds on CPU — a wide window to kill it in.
LONG_Q = (
    "How does ProDiff reduce the number of diffusion iterations, and how does its quality "
    "compare with other text-to-speech models?"
)
REQUEST_TIMEOUT_S = 300
VLLM_BACK_TIMEOUT_S = 900  # the watchdog's backoff plus a warm start (~1 min), on a busy machine


def vllm_process(server: LiveServer) -> psutil.Process:
    """The supervised vLLM's API server: a child of `scholia serve`, leader of its group."""
    for child in psutil.Process(server.process.pid).children(recursive=True):
        if "vllm.entrypoints.openai.api_server" in " ".join(child.cmdline()):
            return child
    raise AssertionError("no vLLM process under scholia serve")


@dataclass
class Streamed:
    events: list[tuple[str, Any]] = field(default_factory=list)
    first_token: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


def read_stream(url: str, payload: dict[str, Any], into: Streamed) -> None:
    try:
        with httpx.stream("POST", url, json=payload, timeout=REQUEST_TIMEOUT_S) as response:
            assert response.status_code == 200, response.read()
            name = "message"
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    into.events.append((name, json.loads(line.removeprefix("data: "))))
                    if name == "token":
                        into.first_token.set()
    except BaseException as error:  # reported by the test, not lost in the thread
        into.error = error
    finally:
        into.first_token.set()


def test_vllm_killed_mid_answer_is_a_503_with_sources_and_comes_back_by_itself(
    live_server: LiveServer,
) -> None:
    assert httpx.get(live_server.url + "/ready", timeout=30).status_code == 200
    vllm = vllm_process(live_server)
    payload = {"question": LONG_Q, "top_k": 20}

    answered: dict[str, Any] = {}

    def ask() -> None:
        response = httpx.post(live_server.url + "/ask", json=payload, timeout=REQUEST_TIMEOUT_S)
        answered.update(status=response.status_code, body=response.json(), at=time.monotonic())

    plain = threading.Thread(target=ask)
    plain.start()
    time.sleep(3)  # its retrieval is done: the prompt is in vLLM's prefill
    # The same question streamed: the same prompt, so its first token comes as soon as the
    # first request's prefill is cached — both are then inside vLLM, generating.
    streamed = Streamed()
    stream = threading.Thread(
        target=read_stream,
        args=(live_server.url + "/ask", {**payload, "stream": True}, streamed),
    )
    stream.start()
    assert streamed.first_token.wait(REQUEST_TIMEOUT_S) and streamed.error is None, streamed
    assert stream.is_alive(), f"streamed to the end before vLLM could be killed: {streamed}"
    assert plain.is_alive(), f"answered before vLLM could be killed: {answered}"

    killed_at = time.monotonic()
    os.killpg(vllm.pid, signal.SIGKILL)
    plain.join(REQUEST_TIMEOUT_S)
    stream.join(REQUEST_TIMEOUT_S)
    assert not plain.is_alive() and not stream.is_alive()

    assert answered["status"] == 503, answered
    body = answered["body"]
    assert "LLM" in body["detail"] and "unreachable" in body["detail"], body
    assert any(s["title"].startswith("ProDiff") for s in body["sources"]), body
    names = [name for name, _ in streamed.events]
    assert names[0] == "sources" and "token" in names and "final" not in names, names
    last_name, last = streamed.events[-1]
    assert last_name == "error" and last["status"] == 503 and "LLM" in last["detail"], last
    assert any(s["title"].startswith("ProDiff") for s in last["sources"]), last
    print(f"503 {answered['at'] - killed_at:.1f} s after the kill")

    down = httpx.get(live_server.url + "/ready", timeout=30)
    assert down.status_code == 503 and down.json()["checks"]["llm"]["ok"] is False, down.text
    assert any("LLM unreachable" in problem for problem in down.json()["problems"])

    back_after = wait_http(
        live_server.url + "/ready",
        live_server.process,
        live_server.log,
        VLLM_BACK_TIMEOUT_S,
        interval=2,
    )
    print(f"vLLM back (/ready 200) {time.monotonic() - killed_at:.0f} s after the kill")
    assert back_after > 0
    log = live_server.log.read_text()
    assert f"vLLM (pid {vllm.pid}) exited unexpectedly (killed by SIGKILL)" in log
    assert "restarting it in 5 s (restart 1 of at most 3 within 600 s)" in log
    assert vllm_process(live_server).pid != vllm.pid
    answer = httpx.post(
        live_server.url + "/ask", json={"question": PRODIFF_Q}, timeout=REQUEST_TIMEOUT_S
    )
    assert answer.status_code == 200 and not answer.json()["declined"], answer.text
    assert live_server.process.poll() is None  # the same Scholia process throughout


@pytest.mark.chroma_server
def test_chroma_server_stopped_is_a_503_naming_the_index_and_recovers_when_it_is_back(
    live_server: LiveServer, chroma_server: ChromaServer, tmp_path: Path
) -> None:
    env = {"SCHOLIA_INDEX_CHROMA_URL": chroma_server.url, "SCHOLIA_LLM_URL": live_server.llm_url}
    with scholia_app(tmp_path, env) as app:  # ingests the corpus into the Chroma server
        chroma_server.stop()
        address = f"Chroma server at 127.0.0.1:{chroma_server.port} does not answer"

        ready = httpx.get(app.url + "/ready", timeout=30)
        assert ready.status_code == 503, ready.text
        problems = ready.json()["problems"]
        assert len(problems) == 1 and problems[0].startswith("index unavailable: "), problems
        assert address in problems[0]
        assert ready.json()["checks"]["llm"]["ok"] is True  # only the index is down

        for path, payload in (
            ("/ask", {"question": PRODIFF_Q}),
            ("/ask", {"question": PRODIFF_Q, "stream": True}),
            ("/search", {"query": "diffusion text-to-speech"}),
        ):
            # The client timeout is the "no hang" bound: a hang fails with ReadTimeout.
            response = httpx.post(app.url + path, json=payload, timeout=60)
            print(f"{path} {payload}: {response.status_code} in {response.elapsed}")
            assert response.status_code == 503, (path, payload, response.text)
            detail = response.json()["detail"]
            assert detail.startswith("The index is unavailable: ") and address in detail, detail

        chroma_server.start()  # same port, same data path
        ready_after = wait_http(app.url + "/ready", app.process, app.log, timeout=30)
        print(f"/ready 200 {ready_after:.1f} s after the Chroma server answered again")
        answer = httpx.post(
            app.url + "/ask", json={"question": PRODIFF_Q}, timeout=REQUEST_TIMEOUT_S
        )
        assert answer.status_code == 200 and not answer.json()["declined"], answer.text
        search = httpx.post(app.url + "/search", json={"query": "ProDiff"}, timeout=60)
        assert search.status_code == 200 and search.json()["results"], search.text
        assert app.process.poll() is None  # recovered without a restart
