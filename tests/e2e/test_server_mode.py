"""Server mode: the app against a real `chroma run` server and a separately started vLLM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from assistant.settings import PROJECT_ROOT
from tests.e2e.conftest import LiveServer
from tests.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.chroma_server]

PRODIFF_Q = "How many iterations does ProDiff need to synthesize high-fidelity mel-spectrograms?"


def test_serve_with_chroma_server_and_external_vllm(
    live_server: LiveServer, chroma_url: str, tmp_path: Path
) -> None:
    app_port = free_port()
    env = {
        **os.environ,
        "SCHOLIA_DATA_DIR": str(tmp_path / "data"),
        "SCHOLIA_INDEX_CHROMA_URL": chroma_url,
        # the live server's vLLM: started by another process, so this app must not start one
        "SCHOLIA_LLM_URL": live_server.llm_url,
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "assistant.cli", "serve", "--port", str(app_port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{app_port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert serve.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(url + "/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(2)
        body = httpx.post(url + "/ask", json={"question": PRODIFF_Q}, timeout=300).json()
        assert not body["declined"] and "2" in body["answer"], body
        cited = [s["title"] for s in body["sources"] if s["rank"] in body["citations"]]
        assert any(title.startswith("ProDiff") for title in cited), body
        # the index lives in the Chroma server, not in the data directory
        assert not (tmp_path / "data" / "chroma").exists()
        assert "starting vLLM" not in log.read_text()
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
