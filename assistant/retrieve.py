"""Hybrid retrieval: dense (Chroma) + BM25 fused (by rank or by score), one result per paper."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ingest.embed import Embedder
from ingest.keyword import KeywordStore, paper_of
from ingest.store import ChromaStore
from scholia.settings import RetrievalSettings


@dataclass
class RetrievedPaper:
    id: str
    title: str
    text: str
    score: float  # fused score of the paper's best chunk
    dense_score: float = 0.0  # best cosine similarity of any chunk (confidence signal)
    keyword_score: float = 0.0  # best BM25 score of any chunk
    best_chunk: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


class Retriever:
    def __init__(
        self,
        store: ChromaStore,
        keywords: KeywordStore,
        embedder: Embedder,
        settings: RetrievalSettings,
    ) -> None:
        self.store = store
        self.keywords = keywords
        self.embedder = embedder
        self.settings = settings

    def search(
        self,
        query: str,
        top_k: int,
        mode: str | None = None,
        filters: dict[str, Any] | None = None,
        parts: tuple[str, ...] = (),
        described: str = "",
    ) -> list[RetrievedPaper]:
        """The `top_k` papers best for `query`. With `described` (a comparison without what it
        asks of each paper alike), its ranking is fused with the whole question's: "what does
        each conclude?" pulls in papers that say "we conclude", yet it may also hold the topic
        ("how does each adapt to distribution shift?"). With `parts` (what a comparison says
        of each paper), each part's best paper comes first: the whole question often leans
        towards one of the papers compared, and the other falls out of reach."""
        depth = top_k * 2 if described else top_k
        papers = self._search(query, depth, mode, filters)
        if described:
            rankings = [papers, self._search(described, depth, mode, filters)]
            papers = _rank_fused(rankings, self.settings.rrf_k)
        whole = {paper.id: paper for paper in papers}
        leads = [
            whole.get(hit.id, hit) for part in parts for hit in self._search(part, 1, mode, filters)
        ]
        return list({paper.id: paper for paper in [*leads, *papers]}.values())[:top_k]

    def _search(
        self, query: str, top_k: int, mode: str | None, filters: dict[str, Any] | None
    ) -> list[RetrievedPaper]:
        mode = mode or self.settings.mode
        candidates = max(self.settings.candidates, top_k * 4)
        fusion = _Fusion(self.settings)
        if mode in {"hybrid", "dense"}:
            hits = self.store.query(self.embedder.embed_query(query), candidates, _where(filters))
            for rank, hit in enumerate(hits, start=1):
                fusion.add(hit.chunk_id, rank, self.settings.dense_weight)
                fusion.dense[hit.chunk_id] = hit.score
                fusion.paper_of[hit.chunk_id] = hit.paper_id
        if mode in {"hybrid", "bm25"}:
            for rank, keyword_hit in enumerate(self.keywords.search(query, candidates), start=1):
                chunk_id = keyword_hit.chunk_id
                fusion.add(chunk_id, rank, self.settings.bm25_weight)
                fusion.keyword[chunk_id] = keyword_hit.score
                fusion.paper_of.setdefault(chunk_id, paper_of(chunk_id))
        return self._papers(fusion, top_k, filters)

    def _papers(
        self, fusion: _Fusion, top_k: int, filters: dict[str, Any] | None
    ) -> list[RetrievedPaper]:
        """The `top_k` best papers stored and matching `filters`, by their best chunk's score."""
        ranked = fusion.ranked_papers()
        papers = self.store.papers([paper_id for paper_id, _ in ranked[: top_k * 2]])
        results = []
        for paper_id, (score, chunk_id) in ranked:
            if paper_id not in papers:
                continue  # BM25 index momentarily ahead of Chroma, or filtered out
            title, text, metadata = papers[paper_id]
            if filters and any(metadata.get(key) != value for key, value in filters.items()):
                continue
            dense_score, keyword_score = fusion.best_scores(paper_id)
            results.append(
                RetrievedPaper(
                    id=paper_id,
                    title=title,
                    text=text,
                    score=score,
                    dense_score=dense_score,
                    keyword_score=keyword_score,
                    best_chunk=chunk_id,
                    metadata=_public_metadata(metadata),
                )
            )
            if len(results) == top_k:
                break
        return results


def _rank_fused(rankings: list[list[RetrievedPaper]], k: int) -> list[RetrievedPaper]:
    """Papers by the sum of their reciprocal ranks in `rankings` (RRF), best first."""
    scores: dict[str, float] = {}
    papers: dict[str, RetrievedPaper] = {}
    for ranking in rankings:
        for rank, paper in enumerate(ranking, start=1):
            scores[paper.id] = scores.get(paper.id, 0.0) + reciprocal_rank(rank, k)
            papers.setdefault(paper.id, paper)
    return sorted(papers.values(), key=lambda paper: scores[paper.id], reverse=True)


def reciprocal_rank(rank: int, k: int, weight: float = 1.0) -> float:
    """What a place in one ranking adds to an item's RRF score (rank from 1)."""
    return weight / (k + rank)


@dataclass
class _Fusion:
    """The dense and BM25 rankings fused chunk by chunk: by reciprocal rank (RRF), or by score
    (distribution-based score fusion: each list's scores as standard deviations from its mean,
    weighted and averaged; a chunk missing from a list counts as that list's lowest; reported
    through the logistic, in (0, 1))."""

    settings: RetrievalSettings
    fused: dict[str, float] = field(default_factory=dict)  # chunk id → RRF score
    dense: dict[str, float] = field(default_factory=dict)  # chunk id → cosine similarity
    keyword: dict[str, float] = field(default_factory=dict)  # chunk id → BM25 score
    paper_of: dict[str, str] = field(default_factory=dict)  # chunk id → paper id

    def add(self, chunk_id: str, rank: int, weight: float) -> None:
        added = reciprocal_rank(rank, self.settings.rrf_k, weight)
        self.fused[chunk_id] = self.fused.get(chunk_id, 0.0) + added

    def scores(self) -> dict[str, float]:
        if self.settings.fusion == "rrf":
            return self.fused
        lists = [
            (self.dense, self.settings.dense_weight),
            (self.keyword, self.settings.bm25_weight),
        ]
        lists = [pair for pair in lists if pair[0]]
        total_weight = sum(weight for _, weight in lists) or 1.0
        fused = dict.fromkeys(self.paper_of, 0.0)
        for scores, weight in lists:
            values = np.fromiter(scores.values(), dtype=float)
            mean, spread, lowest = values.mean(), values.std() or 1.0, values.min()
            for chunk_id in fused:
                standard = (scores.get(chunk_id, lowest) - mean) / spread
                fused[chunk_id] += weight / total_weight * standard
        # Shown as a score in (0, 1), the same order (the logistic does not round to 1 for any
        # z a few hundred candidates allow): 0.5 is an average candidate.
        return {chunk_id: 1 / (1 + math.exp(-z)) for chunk_id, z in fused.items()}

    def ranked_papers(self) -> list[tuple[str, tuple[float, str]]]:
        """Each paper with its best chunk's fused score and id, best first."""
        best: dict[str, tuple[float, str]] = {}
        for chunk_id, score in self.scores().items():
            paper_id = self.paper_of[chunk_id]
            if paper_id not in best or score > best[paper_id][0]:
                best[paper_id] = (score, chunk_id)
        return sorted(best.items(), key=lambda item: item[1][0], reverse=True)

    def best_scores(self, paper_id: str) -> tuple[float, float]:
        """The best dense and the best BM25 score of any of the paper's chunks."""
        chunk_ids = [c for c, p in self.paper_of.items() if p == paper_id]
        return (
            max((self.dense.get(c, 0.0) for c in chunk_ids), default=0.0),
            max((self.keyword.get(c, 0.0) for c in chunk_ids), default=0.0),
        )


INTERNAL_METADATA = {
    "paper_id",
    "title",
    "chunk_index",
    "paper_hash",
    "paper_chunks",
    "_node_content",
    "_node_type",
    "document_id",
    "doc_id",
    "ref_doc_id",
}


def _public_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if key not in INTERNAL_METADATA}


def _where(filters: dict[str, Any] | None) -> dict[str, Any] | None:
    if not filters:
        return None
    clauses = [{key: {"$eq": value}} for key, value in filters.items()]
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}
