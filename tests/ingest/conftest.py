from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.embed import Embedder
from scholia.settings import get_settings
from tests.ingest.helpers import HashEmbedder


@pytest.fixture(scope="session")
def hash_embedder(embedder: Embedder) -> HashEmbedder:
    return HashEmbedder(embedder)


@pytest.fixture
def data_dir(tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """SCHOLIA_DATA_DIR for in-process CLI runs, which use the session's model."""
    folder = tmp_path / "data"
    monkeypatch.setenv("SCHOLIA_DATA_DIR", str(folder))
    monkeypatch.delenv("SCHOLIA_CONFIG", raising=False)
    monkeypatch.setattr("ingest.pipeline.Embedder", lambda *_, **__: embedder)
    get_settings.cache_clear()
    yield folder
    get_settings.cache_clear()
