"""The spine, for real: `scholia serve` with the packaged model on vLLM (CPU) and the real corpus."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.e2e.conftest import LiveServer, ask
from tests.fakes import states

pytestmark = pytest.mark.e2e

PRODIFF_Q = "How many iterations does ProDiff need to synthesize high-fidelity mel-spectrograms?"


def test_prodiff_question_is_answered_with_a_citation(live_server: LiveServer) -> None:
    body = ask(live_server, PRODIFF_Q)
    assert not body["declined"], body
    answer = str(body["answer"])
    assert states(answer, "2") or re.search(r"\btwo\b", answer, re.IGNORECASE), body
    sources = {s["rank"]: s for s in body["sources"]}  # type: ignore[attr-defined]
    cited = [sources[rank]["title"] for rank in body["citations"]]  # type: ignore[attr-defined]
    assert any(title.startswith("ProDiff") for title in cited), body
    assert body["model"] == "qwen2.5-coder-0.5b-instruct"
    assert body["usage"]["completion_tokens"] > 0  # type: ignore[index]


def test_question_outside_the_collection_is_declined(live_server: LiveServer) -> None:
    body = ask(live_server, "What batch size and learning rate were used to train ProDiff?")
    assert body["declined"], body
    assert body["citations"] == []


def test_search_and_ready(live_server: LiveServer) -> None:
    results = httpx.post(
        live_server.url + "/search",
        json={"query": "gossip learning variance", "top_k": 3},
        timeout=60,
    ).json()["results"]
    assert results[0]["title"].startswith("Vanishing Variance Problem")
    assert httpx.get(live_server.url + "/ready", timeout=30).json()["ready"] is True
