"""Hybrid retrieval on a tiny index built in tmp: reciprocal rank fusion, one result per paper."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from assistant.retrieve import INTERNAL_METADATA, Retriever
from ingest.embed import Embedder
from ingest.pipeline import keyword_index, open_store, run_ingest
from scholia.settings import RetrievalSettings, Settings
from tests.ingest.helpers import write_jsonl

SPEECH = (
    "We propose a fast diffusion model for text-to-speech synthesis. "
    "It needs only 2 iterations to produce high-fidelity mel-spectrograms."
)
# Long enough for several chunks: one result must still stand for the whole paper.
GRAPHS = " ".join(
    f"Pipelined model parallelism trains deep graph neural networks on GPU cluster {n}."
    for n in range(60)
)
VISION = "A vision transformer classifies images after pre-training on large labelled datasets."
# A word only BM25 can match: the embedding knows nothing of it.
RARE = "Quokkaformer schedules learning rates for reinforcement learning agents in games."

RECORDS: list[dict[str, Any]] = [
    {"id": "speech", "title": "Fast Diffusion for Speech", "abstract": SPEECH, "venue": "A"},
    {"id": "graphs", "title": "Pipelined GNN Training", "abstract": GRAPHS, "venue": "B"},
    {"id": "vision", "title": "Vision Transformers", "abstract": VISION, "venue": "A"},
    {"id": "rare", "title": "Learning Rate Schedules", "abstract": RARE, "venue": "B"},
]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Settings:
    folder = tmp_path_factory.mktemp("retrieve")
    settings = Settings(data_dir=folder / "data")
    corpus = write_jsonl(folder / "papers.jsonl", RECORDS)
    run_ingest(settings, [corpus], embedder=embedder, log=lambda _: None)
    return settings


def retriever(settings: Settings, embedder: Embedder, **retrieval: Any) -> Retriever:
    return Retriever(
        open_store(settings),
        keyword_index(settings),
        embedder,
        RetrievalSettings(**retrieval),
    )


def test_each_paper_scores_its_best_chunks_reciprocal_rank_fusion(
    settings: Settings, embedder: Embedder
) -> None:
    search = retriever(
        settings, embedder, fusion="rrf", rrf_k=10, dense_weight=1.0, bm25_weight=0.5
    )
    query = "graph neural network training on GPUs"
    store, keywords = open_store(settings), keyword_index(settings)
    fused: dict[str, float] = {}
    paper_of: dict[str, str] = {}
    for rank, hit in enumerate(store.query(embedder.embed_query(query), 30), start=1):
        fused[hit.chunk_id] = 1.0 / (10 + rank)
        paper_of[hit.chunk_id] = hit.paper_id
    for rank, keyword_hit in enumerate(keywords.search(query, 30), start=1):
        fused[keyword_hit.chunk_id] = fused.get(keyword_hit.chunk_id, 0.0) + 0.5 / (10 + rank)
    assert len([c for c in paper_of.values() if c == "graphs"]) > 1  # several chunks compete

    results = search.search(query, top_k=4)
    assert results[0].id == "graphs"
    assert len({paper.id for paper in results}) == len(results) == 4
    for paper in results:
        best = max(score for chunk, score in fused.items() if paper_of[chunk] == paper.id)
        assert paper.score == pytest.approx(best)
        assert fused[paper.best_chunk] == pytest.approx(best)
    assert [paper.score for paper in results] == sorted(
        (paper.score for paper in results), reverse=True
    )


def test_a_word_only_bm25_knows_is_found_by_hybrid_and_bm25_not_by_dense_scores(
    settings: Settings, embedder: Embedder
) -> None:
    hybrid = retriever(settings, embedder).search("Quokkaformer", top_k=1)
    assert [paper.id for paper in hybrid] == ["rare"]
    assert hybrid[0].keyword_score > 0 and hybrid[0].dense_score > 0

    bm25 = retriever(settings, embedder, mode="bm25").search("Quokkaformer", top_k=4)
    assert [paper.id for paper in bm25] == ["rare"]  # no other paper has the word
    assert bm25[0].dense_score == 0.0

    dense = retriever(settings, embedder).search("Quokkaformer", top_k=4, mode="dense")
    assert len(dense) == 4 and all(paper.keyword_score == 0.0 for paper in dense)


def test_top_k_papers_whole_with_public_metadata(settings: Settings, embedder: Embedder) -> None:
    results = retriever(settings, embedder).search("diffusion text-to-speech", top_k=2)
    assert len(results) == 2
    speech = results[0]
    assert (speech.id, speech.title) == ("speech", "Fast Diffusion for Speech")
    assert speech.text == SPEECH
    assert speech.metadata == {"venue": "A"}
    assert not INTERNAL_METADATA & set(speech.metadata)


def test_filters_keep_only_matching_papers(settings: Settings, embedder: Embedder) -> None:
    results = retriever(settings, embedder).search("training", top_k=4, filters={"venue": "B"})
    assert {paper.id for paper in results} == {"graphs", "rare"}
    for mode in ("dense", "bm25"):
        filtered = retriever(settings, embedder).search(
            "diffusion speech", top_k=4, mode=mode, filters={"venue": "B"}
        )
        assert "speech" not in {paper.id for paper in filtered}, mode


def test_a_paper_bm25_still_has_but_chroma_lost_is_skipped(
    tmp_path: Path, embedder: Embedder
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    run_ingest(
        settings,
        [write_jsonl(tmp_path / "p.jsonl", RECORDS)],
        embedder=embedder,
        log=lambda _: None,
    )
    open_store(settings).delete_papers(["rare"])  # the keyword index is not rebuilt
    results = retriever(settings, embedder).search("Quokkaformer", top_k=4)
    assert "rare" not in {paper.id for paper in results}
    assert retriever(settings, embedder, mode="bm25").search("Quokkaformer", top_k=4) == []


def test_each_part_of_a_comparison_leads_with_its_best_paper(
    settings: Settings, embedder: Embedder
) -> None:
    search = retriever(settings, embedder)
    question = "Compare the diffusion speech synthesiser with the GNN pipeline trainer on GPUs."
    whole = [paper.id for paper in search.search(question, 2)]
    parts = ("diffusion text-to-speech synthesis", "images classified by a vision transformer")
    found = search.search(question, 2, parts=parts)
    assert "vision" not in whole
    assert [paper.id for paper in found] == ["speech", "vision"]
    assert [paper.id for paper in search.search(question, 3, parts=parts)][2] in whole


def test_a_comparisons_description_is_ranked_with_the_whole_question(
    settings: Settings, embedder: Embedder
) -> None:
    search = retriever(settings, embedder, mode="bm25")
    described = "Which papers schedule rates for agents?"
    question = f"{described} What does each find about vision transformers and labelled images?"
    whole = [paper.id for paper in search.search(question, 4)]
    alone = [paper.id for paper in search.search(described, 4)]
    fused = [paper.id for paper in search.search(question, 4, described=described)]
    assert whole[:2] == ["vision", "rare"]  # what is asked of each outweighs the description
    assert alone == ["rare"]
    assert fused[:2] == ["rare", "vision"]


def test_score_fusion_adds_each_lists_standardised_scores(
    settings: Settings, embedder: Embedder
) -> None:
    search = retriever(settings, embedder, fusion="dbsf", dense_weight=1.0, bm25_weight=0.5)
    query = "graph neural network training on GPUs"
    store, keywords = open_store(settings), keyword_index(settings)
    dense = {hit.chunk_id: hit.score for hit in store.query(embedder.embed_query(query), 30)}
    keyword = {hit.chunk_id: hit.score for hit in keywords.search(query, 30)}
    fused: dict[str, float] = {}
    weights, total = ((dense, 1.0), (keyword, 0.5)), 1.0 + 0.5
    for scores, weight in weights:
        mean, spread = statistics.fmean(scores.values()), statistics.pstdev(scores.values())
        for chunk in dense | keyword:  # a chunk a list missed counts as that list's lowest
            standard = (scores.get(chunk, min(scores.values())) - mean) / spread
            fused[chunk] = fused.get(chunk, 0.0) + weight / total * standard
    fused = {chunk: 1 / (1 + math.exp(-z)) for chunk, z in fused.items()}

    results = search.search(query, top_k=4)
    assert results[0].id == "graphs"
    for paper in results:
        assert paper.score == pytest.approx(fused[paper.best_chunk])
        assert paper.score == pytest.approx(
            max(score for chunk, score in fused.items() if chunk.rsplit("#", 1)[0] == paper.id)
        )
