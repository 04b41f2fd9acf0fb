"""The BM25 keyword index (bm25s + PyStemmer), persisted beside Chroma and replaced atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

IDS_FILE = "chunk_ids.json"
STATE_FILE = "state.json"


def fingerprint(chunk_ids: Iterable[str], paper_hashes: Iterable[str]) -> str:
    """Identifies one exact index content; BM25 and Chroma must agree on it."""
    digest = hashlib.sha256()
    for value in sorted(chunk_ids) + sorted(set(paper_hashes)):
        digest.update(value.encode("utf-8") + b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class KeywordHit:
    chunk_id: str
    score: float


class KeywordIndex:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @cached_property
    def _stemmer(self) -> Any:
        import Stemmer

        return Stemmer.Stemmer("english")

    def _tokenize(self, texts: list[str]) -> Any:
        import bm25s

        return bm25s.tokenize(
            texts, stopwords="en", stemmer=self._stemmer, return_ids=False, show_progress=False
        )

    def build(self, chunk_ids: list[str], texts: list[str], state_fingerprint: str) -> None:
        """Index `texts` and swap the folder in whole: readers see the old or the new index."""
        import bm25s

        staging = self.folder.with_name(self.folder.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        if texts:
            retriever = bm25s.BM25()
            retriever.index(self._tokenize(texts), show_progress=False)
            retriever.save(str(staging), show_progress=False)
        (staging / IDS_FILE).write_text(json.dumps(chunk_ids), encoding="utf-8")
        (staging / STATE_FILE).write_text(
            json.dumps({"fingerprint": state_fingerprint, "chunks": len(chunk_ids)}),
            encoding="utf-8",
        )
        _fsync_tree(staging)
        old = self.folder.with_name(self.folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if self.folder.exists():
            os.replace(self.folder, old)
        os.replace(staging, self.folder)
        shutil.rmtree(old, ignore_errors=True)
        self.__dict__.pop("_loaded", None)

    def state(self) -> dict[str, Any] | None:
        path = self.folder / STATE_FILE
        if not path.is_file():
            return None
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data

    @cached_property
    def _loaded(self) -> tuple[Any, list[str]]:
        import bm25s

        chunk_ids: list[str] = json.loads((self.folder / IDS_FILE).read_text(encoding="utf-8"))
        if not chunk_ids:
            return None, []
        return bm25s.BM25.load(str(self.folder), show_progress=False), chunk_ids

    def search(self, query: str, k: int) -> list[KeywordHit]:
        retriever, chunk_ids = self._loaded
        if retriever is None:
            return []
        tokens = self._tokenize([query])
        if not tokens or not tokens[0]:
            return []
        vocabulary = retriever.vocab_dict
        known = [[token for token in tokens[0] if token in vocabulary]]
        if not known[0]:
            return []
        documents, scores = retriever.retrieve(
            known, k=min(k, len(chunk_ids)), show_progress=False, n_threads=1
        )
        return [
            KeywordHit(chunk_ids[int(document)], float(score))
            for document, score in zip(documents[0], scores[0], strict=True)
            if score > 0
        ]


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
