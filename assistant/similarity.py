"""MiniLM cosine between a text and sentences, for packing and verifying alike.

The same papers come back for many questions, and packing and verifying compare the question
and each claim with the same abstract sentences: each sentence is embedded once per process.
"""

from __future__ import annotations

import threading

import numpy as np

from ingest.embed import Embedder

SENTENCE_CACHE_SIZE = 200_000


class SentenceSimilarity:
    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()  # worker threads share the cache

    def __call__(self, text: str, sentences: list[str]) -> np.ndarray:
        """MiniLM cosine of `text` with each sentence (unit vectors: a dot product)."""
        if not sentences:
            return np.zeros(0)
        return self.vectors(sentences) @ self.embed(text)

    def embed(self, text: str) -> np.ndarray:
        return self.embedder.encode([text])[0]

    def vectors(self, sentences: list[str]) -> np.ndarray:
        """The sentences' vectors (float32), each embedded once per process."""
        with self._lock:
            missing = list(dict.fromkeys(s for s in sentences if s not in self._cache))
        vectors = self.embedder.encode(missing)
        with self._lock:
            if len(self._cache) + len(missing) > SENTENCE_CACHE_SIZE:
                self._cache.clear()
            self._cache.update(zip(missing, vectors, strict=True))
            # Another thread may have cleared the cache since `missing` was taken.
            lost = [s for s in dict.fromkeys(sentences) if s not in self._cache]
            self._cache.update(zip(lost, self.embedder.encode(lost), strict=True))
            return np.stack([self._cache[s] for s in sentences])
