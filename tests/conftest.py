from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scholia.offline import apply_offline_env
from scholia.settings import BUNDLED_CORPUS, Settings

apply_offline_env(Settings().data_dir)  # the tests' entry point: before any library loads

from fastapi.testclient import TestClient  # noqa: E402

from assistant.api.main import create_app  # noqa: E402
from assistant.api.services import Services, build_services  # noqa: E402
from ingest.embed import Embedder  # noqa: E402
from ingest.pipeline import run_ingest  # noqa: E402
from tests.fakes import FakeLLM  # noqa: E402

# Fixtures that start real servers (chroma run), shared by tests/ingest and tests/e2e.
pytest_plugins = ["tests.servers"]


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="session")
def indexed_settings(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Settings:
    """A data directory holding the real bundled corpus, ingested once per test session."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("indexed"))
    run_ingest(settings, [BUNDLED_CORPUS], embedder=embedder, log=lambda _: None)
    return settings


@pytest.fixture
def fake_llm() -> FakeLLM:
    return FakeLLM()


@pytest.fixture
def services(indexed_settings: Settings, fake_llm: FakeLLM, embedder: Embedder) -> Services:
    return build_services(indexed_settings, llm=fake_llm, embedder=embedder)


@pytest.fixture
def client(indexed_settings: Settings, services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(indexed_settings, services)) as test_client:
        yield test_client


@pytest.fixture
def corpus_path() -> Path:
    return BUNDLED_CORPUS
