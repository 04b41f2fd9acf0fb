"""Check every sentence of a draft answer against the sources before anyone sees it.

A sentence survives when a source supports it: every number in it appears in that source, and
it is close in meaning to one of the source's sentences (MiniLM cosine) or shares most of its
content words with the source. Citations are repaired to point at a supporting source;
markers that point nowhere are removed. Nothing supported → the answer is a refusal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

import prompts
from assistant.pack import PackedSource
from ingest.chunk import split_sentences
from ingest.embed import Embedder

CITATION = re.compile(r"\s*\[(\d+(?:\s*[,;]\s*\d+)*)\]")
NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*")
WORD = re.compile(r"[^\W\d_]{4,}", re.UNICODE)
DECLINE = re.compile(
    r"collection does not say|sources? (do|does) not (say|mention|contain|provide|specify)"
    r"|(is|are) not (mentioned|provided|specified|stated|given)|no information"
    r"|cannot (find|answer|determine)|not enough information|does not (say|mention|specify)",
    re.IGNORECASE,
)
SENTENCE_CACHE_SIZE = 200_000
STOPWORDS = frozenset(
    ["this", "that", "with", "from", "which", "their", "there", "these", "those", "have", "been", "were", "what", "when", "where", "about", "into", "than", "then", "them", "they", "also", "such", "only", "more", "most", "other", "some", "very", "each", "both", "paper", "papers", "source", "sources", "proposes", "propose", "introduces", "introduce", "presents", "present", "uses", "using", "used"]
)


@dataclass(frozen=True)
class Verdict:
    answer: str
    citations: list[int]
    unsupported: list[int]
    declined: bool


def is_decline(text: str) -> bool:
    return bool(DECLINE.search(text))


def decline_text() -> str:
    return prompts.load("decline").strip()


class Verifier:
    def __init__(
        self, embedder: Embedder, semantic_threshold: float, lexical_threshold: float
    ) -> None:
        self.embedder = embedder
        self.semantic_threshold = semantic_threshold
        self.lexical_threshold = lexical_threshold
        self._cache: dict[str, np.ndarray] = {}

    def check(self, draft: str, sources: list[PackedSource]) -> Verdict:
        by_rank = {source.rank: source for source in sources}
        sentences = split_sentences(draft.strip())
        if not sentences or not sources:
            return Verdict(decline_text(), [], list(range(len(sentences))), True)

        source_sentences = {
            rank: split_sentences(source.paper.title + ". " + source.text)
            for rank, source in by_rank.items()
        }
        flat = [(rank, s) for rank, items in source_sentences.items() for s in items]
        bodies = [_strip_citations(sentence) for sentence in sentences]
        source_vectors = self._source_vectors([s for _, s in flat])
        body_vectors = np.asarray(self.embedder.embed(bodies))
        flat_ranks = np.asarray([rank for rank, _ in flat])

        kept: list[str] = []
        citations: list[int] = []
        unsupported: list[int] = []
        decline_sentences = 0
        for index, (sentence, body) in enumerate(zip(sentences, bodies, strict=True)):
            if is_decline(body):
                decline_sentences += 1
                continue
            cited = [rank for rank in _markers(sentence) if rank in by_rank]
            if not _has_content(body):
                if len(cited) == 1:
                    # "[2]" alone answers a which-paper question: name the paper.
                    kept.append(f"{by_rank[cited[0]].paper.title} [{cited[0]}].")
                    citations.append(cited[0])
                continue
            similarity = source_vectors @ body_vectors[index]
            supporting = {
                rank: float(similarity[flat_ranks == rank].max())
                for rank, source in by_rank.items()
                if self._supports(body, source, float(similarity[flat_ranks == rank].max()))
            }
            if not supporting:
                unsupported.append(index)
                continue
            chosen = [rank for rank in cited if rank in supporting] or [
                max(supporting, key=lambda rank: supporting[rank])
            ]
            kept.append(body.rstrip() + " " + "".join(f"[{rank}]" for rank in chosen))
            citations.extend(chosen)

        if not kept:
            return Verdict(decline_text(), [], unsupported, True)
        if decline_sentences and not citations:
            return Verdict(decline_text(), [], unsupported, True)
        return Verdict(" ".join(kept), sorted(set(citations)), unsupported, False)

    def _source_vectors(self, sentences: list[str]) -> np.ndarray:
        """Source sentences recur across questions: embed each once per process."""
        missing = list(dict.fromkeys(s for s in sentences if s not in self._cache))
        if len(self._cache) + len(missing) > SENTENCE_CACHE_SIZE:
            self._cache.clear()
        for sentence, vector in zip(missing, self.embedder.embed(missing), strict=True):
            self._cache[sentence] = np.asarray(vector)
        return np.stack([self._cache[s] for s in sentences])

    def _supports(self, body: str, source: PackedSource, similarity: float) -> bool:
        haystack = f"{source.paper.title} {source.text}"
        source_numbers = {_normalize_number(n) for n in NUMBER.findall(haystack)}
        if any(_normalize_number(n) not in source_numbers for n in NUMBER.findall(body)):
            return False
        if similarity >= self.semantic_threshold:
            return True
        words = {w.casefold() for w in WORD.findall(body)} - STOPWORDS
        if not words:
            return False
        source_words = {w.casefold() for w in WORD.findall(haystack)}
        return len(words & source_words) / len(words) >= self.lexical_threshold


def _markers(sentence: str) -> list[int]:
    return [int(n) for group in CITATION.findall(sentence) for n in re.split(r"[,;]", group)]


def _strip_citations(sentence: str) -> str:
    return CITATION.sub("", sentence).strip()


def _has_content(body: str) -> bool:
    words = [w for w in WORD.findall(body) if w.casefold() not in STOPWORDS]
    return len(words) >= 2 or bool(NUMBER.search(body))


def _normalize_number(number: str) -> str:
    return number.replace(",", "").rstrip(".")
