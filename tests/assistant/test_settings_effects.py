"""Settings that change behaviour do what their names say: `retrieval.top_k` is the default
number of sources everywhere; `answer.extractive_fallback=false` leaves only the model's
verified claims (no source sentence quoted in their place)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from assistant.analyse import analyse
from assistant.api.main import create_app
from assistant.api.services import build_services
from assistant.pack import PackedSource, pack
from assistant.verify import Verifier
from ingest.embed import Embedder
from scholia.settings import AnswerSettings, Settings
from tests.assistant.test_verify import PAPERS, PRODIFF, SPEED, draft
from tests.fakes import FakeLLM

GNN_QUERY = "pipelined model parallelism for GNN"
PRODIFF_Q = "How many iterations does ProDiff need to synthesize high-fidelity mel-spectrograms?"


@pytest.fixture
def top_k_client(
    indexed_settings: Settings, embedder: Embedder, fake_llm: FakeLLM
) -> Iterator[TestClient]:
    retrieval = indexed_settings.retrieval.model_copy(update={"top_k": 1})
    settings = indexed_settings.model_copy(update={"retrieval": retrieval})
    services = build_services(settings, llm=fake_llm, embedder=embedder)
    with TestClient(create_app(settings, services)) as client:
        yield client


def test_retrieval_top_k_is_the_default_number_of_sources(top_k_client: TestClient) -> None:
    searched = top_k_client.post("/search", json={"query": GNN_QUERY}).json()["results"]
    assert len(searched) == 1
    asked = top_k_client.post("/ask", json={"question": PRODIFF_Q}).json()["sources"]
    assert len(asked) == 1
    named = top_k_client.post("/search", json={"query": GNN_QUERY, "top_k": 3}).json()
    assert len(named["results"]) == 3  # a request's own number wins


@pytest.fixture
def verifiers(embedder: Embedder) -> dict[bool, Verifier]:
    return {
        fallback: Verifier(embedder, AnswerSettings(extractive_fallback=fallback))
        for fallback in (True, False)
    }


@pytest.fixture
def sources(verifiers: dict[bool, Verifier]) -> list[PackedSource]:
    return pack(PAPERS, 10_000, analyse("Compare the speed of both"), verifiers[True].similarity)


def test_without_extractive_fallback_a_failed_claim_is_not_replaced_by_a_quote(
    verifiers: dict[bool, Verifier], sources: list[PackedSource]
) -> None:
    garbled = draft(("ProDiff is 42x faster than real-time on one GPU.", ("1.3",)))
    with_quotes = verifiers[True].verify(garbled, analyse(SPEED), sources)
    assert PRODIFF[2] in with_quotes.answer
    without = verifiers[False].verify(garbled, analyse(SPEED), sources)
    assert without.declined and without.unsupported == [0]


@pytest.mark.parametrize(
    "question",
    [SPEED, "Why is ProDiff only 5x faster than real time on one GPU?"],
    ids=["declined", "false-premise-declined"],
)
def test_without_extractive_fallback_a_refusal_stands(
    verifiers: dict[bool, Verifier], sources: list[PackedSource], question: str
) -> None:
    assert not verifiers[True].verify(draft(), analyse(question), sources).declined
    assert verifiers[False].verify(draft(), analyse(question), sources).declined


def test_without_extractive_fallback_a_comparison_keeps_only_the_models_claims(
    verifiers: dict[bool, Verifier], sources: list[PackedSource]
) -> None:
    question = "Compare how ProDiff and GNNPipe speed things up."
    one_paper = draft(("ProDiff is 24x faster than real-time on one GPU.", ("1.3",)))
    assert verifiers[True].verify(one_paper, analyse(question), sources).citations == [1, 2]
    assert verifiers[False].verify(one_paper, analyse(question), sources).citations == [1]
