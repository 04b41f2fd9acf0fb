"""Helpers for the ingest tests: small JSONL corpora, collection snapshots, a cheap embedder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from typer.testing import CliRunner, Result

from ingest.embed import Embedder
from ingest.parse import Paper, read_papers
from ingest.pipeline import keyword_index, open_store
from scholia.settings import BUNDLED_CORPUS, Settings

BUNDLED = [item for item in read_papers(BUNDLED_CORPUS) if isinstance(item, Paper)]


def paper_records(count: int, start: int = 0) -> list[dict[str, Any]]:
    """`count` JSONL records from the bundled abstracts; past 103 they repeat with new titles."""
    records = []
    for number in range(start, start + count):
        paper = BUNDLED[number % len(BUNDLED)]
        variant = number // len(BUNDLED)
        title = paper.title if variant == 0 else f"{paper.title} (variant {variant})"
        records.append(
            {
                "title": title,
                "abstract": paper.abstract,
                "published": str(2000 + number % 25),
                "authors": [f"Author {number}", "Someone Else"],
                "citations": number,
            }
        )
    return records


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text(
        "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records),
        encoding="utf-8",
    )
    return path


Snapshot = tuple[list[str], list[str], list[dict[str, Any]]]


def snapshot(settings: Settings, embeddings: bool = False) -> Any:
    """The collection's ids, documents and metadatas (and vectors), ordered by id."""
    include: list[Any] = ["documents", "metadatas"] + (["embeddings"] if embeddings else [])
    page = open_store(settings).collection.get(include=include)
    order = sorted(range(len(page["ids"])), key=lambda i: page["ids"][i])
    ids = [page["ids"][i] for i in order]
    documents = [(page["documents"] or [])[i] for i in order]
    metadatas = [dict((page["metadatas"] or [])[i] or {}) for i in order]
    if embeddings:
        vectors = np.asarray(page["embeddings"])[order] if ids else np.zeros((0, 0))
        return ids, documents, metadatas, vectors
    return ids, documents, metadatas


def keyword_state(settings: Settings) -> tuple[Any, str | None]:
    """BM25's recorded state (fingerprint, chunk count) and a digest of its files' bytes."""
    index = keyword_index(settings)
    return index.state(), index.files_digest()


def chunk_ids_of(settings: Settings, paper_id: str) -> list[str]:
    page = open_store(settings).collection.get(where={"paper_id": paper_id}, include=[])
    return sorted(page["ids"])


class HashEmbedder(Embedder):
    """The real tokenizer (so chunks are identical) with cheap text-derived unit vectors."""

    def __init__(self, real: Embedder) -> None:
        super().__init__(real.model_path, real.batch_size)
        self.__dict__["model"] = real.model  # share the loaded model (cached_property slot)

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
            vector = np.random.default_rng(seed).standard_normal(self.dimension)
            rows.append(vector / np.linalg.norm(vector))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dimension)


def make_settings(data_dir: Path, **update: Any) -> Settings:
    return Settings(data_dir=data_dir, **update)


def cli_ingest(*args: Any) -> Result:
    """`scholia ingest ARGS` in-process (settings from the environment)."""
    from assistant.cli import app

    return CliRunner().invoke(app, ["ingest", *map(str, args)])
