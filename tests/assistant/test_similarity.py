"""Sentence similarity: each sentence embedded once per process, safely across threads."""

import numpy as np

from assistant.similarity import SentenceSimilarity
from ingest.embed import Embedder


def test_a_sentence_is_embedded_once_however_often_it_is_compared(embedder: Embedder) -> None:
    encoded: list[str] = []

    class CountingEmbedder:
        def encode(self, texts: list[str]) -> np.ndarray:
            encoded.extend(texts)
            return embedder.encode(texts)

    similarity = SentenceSimilarity(CountingEmbedder())  # type: ignore[arg-type]
    sentences = ["ProDiff is fast.", "GNNPipe is parallel."]
    first = similarity("Which model is fast?", sentences)
    again = similarity("Which model is parallel?", [*sentences, sentences[0]])
    assert encoded.count("ProDiff is fast.") == 1
    assert first[0] > first[1] and again[1] > again[0]
    assert np.isclose(again[0], again[2])


def test_sentences_cleared_from_the_cache_by_another_thread_are_embedded_again(
    embedder: Embedder,
) -> None:
    class ClearingEmbedder:
        """Embeds like the real one, but another question clears the cache meanwhile."""

        cleared = False

        def encode(self, texts: list[str]) -> np.ndarray:
            if not self.cleared:
                similarity._cache.clear()
                self.cleared = True
            return embedder.encode(texts)

    similarity = SentenceSimilarity(embedder)
    similarity.vectors(["ProDiff is fast."])
    similarity.embedder = ClearingEmbedder()  # type: ignore[assignment]
    vectors = similarity.vectors(["ProDiff is fast.", "GNNPipe is parallel."])
    assert vectors.shape[0] == 2
