"""Hybrid retrieval: dense (Chroma) + BM25 fused by reciprocal rank, one result per paper."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ingest.embed import Embedder
from ingest.keyword import KeywordIndex
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
        keywords: KeywordIndex,
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
    ) -> list[RetrievedPaper]:
        mode = mode or self.settings.mode
        candidates = max(self.settings.candidates, top_k * 4)
        fused: dict[str, float] = {}
        dense_scores: dict[str, float] = {}
        keyword_scores: dict[str, float] = {}
        chunk_paper: dict[str, str] = {}

        if mode in {"hybrid", "dense"}:
            where = _where(filters)
            hits = self.store.query(self.embedder.embed_query(query), candidates, where)
            for rank, hit in enumerate(hits, start=1):
                fused[hit.chunk_id] = fused.get(hit.chunk_id, 0.0) + self.settings.dense_weight / (
                    self.settings.rrf_k + rank
                )
                dense_scores[hit.chunk_id] = hit.score
                chunk_paper[hit.chunk_id] = hit.paper_id
        if mode in {"hybrid", "bm25"}:
            for rank, keyword_hit in enumerate(self.keywords.search(query, candidates), start=1):
                chunk_id = keyword_hit.chunk_id
                fused[chunk_id] = fused.get(chunk_id, 0.0) + self.settings.bm25_weight / (
                    self.settings.rrf_k + rank
                )
                keyword_scores[chunk_id] = keyword_hit.score
                chunk_paper.setdefault(chunk_id, chunk_id.rsplit("#", 1)[0])

        best: dict[str, tuple[float, str]] = {}
        for chunk_id, score in fused.items():
            paper_id = chunk_paper[chunk_id]
            if paper_id not in best or score > best[paper_id][0]:
                best[paper_id] = (score, chunk_id)
        ranked = sorted(best.items(), key=lambda item: item[1][0], reverse=True)
        papers = self.store.papers([paper_id for paper_id, _ in ranked[: top_k * 2]])
        results = []
        for paper_id, (score, chunk_id) in ranked:
            if paper_id not in papers:
                continue  # BM25 index momentarily ahead of Chroma, or filtered out
            title, text, metadata = papers[paper_id]
            if filters and any(metadata.get(key) != value for key, value in filters.items()):
                continue
            chunk_ids = [c for c, p in chunk_paper.items() if p == paper_id]
            results.append(
                RetrievedPaper(
                    id=paper_id,
                    title=title,
                    text=text,
                    score=score,
                    dense_score=max((dense_scores.get(c, 0.0) for c in chunk_ids), default=0.0),
                    keyword_score=max((keyword_scores.get(c, 0.0) for c in chunk_ids), default=0.0),
                    best_chunk=chunk_id,
                    metadata=_public_metadata(metadata),
                )
            )
            if len(results) == top_k:
                break
        return results


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
