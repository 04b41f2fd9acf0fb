"""Server mode: the app against a real `chroma run` server and a separately started vLLM."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import LiveServer, scholia_app
from tests.fakes import states

pytestmark = [pytest.mark.e2e, pytest.mark.chroma_server]

PRODIFF_Q = "How many iterations does ProDiff need to synthesize high-fidelity mel-spectrograms?"


def test_serve_with_chroma_server_and_external_vllm(
    live_server: LiveServer, chroma_url: str, tmp_path: Path
) -> None:
    env = {
        "SCHOLIA_INDEX_CHROMA_URL": chroma_url,
        # the live server's vLLM: started by another process, so this app must not start one
        "SCHOLIA_LLM_URL": live_server.llm_url,
    }
    with scholia_app(tmp_path, env) as app:
        body = httpx.post(app.url + "/ask", json={"question": PRODIFF_Q}, timeout=300).json()
        assert not body["declined"] and states(body["answer"], "2"), body
        cited = [s["title"] for s in body["sources"] if s["rank"] in body["citations"]]
        assert any(title.startswith("ProDiff") for title in cited), body
        # the index lives in the Chroma server, not in the data directory
        assert not (tmp_path / "data" / "chroma").exists()
        assert "starting vLLM" not in app.log.read_text()
