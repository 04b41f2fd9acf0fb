"""Metrics that need no model: retrieval ranks and scores, key strings, means."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from ingest.parse import normalize_title

K_VALUES = (1, 3, 5, 10)
RETRIEVAL_DEPTH = 10  # papers retrieved per question; nDCG is at this depth too


def relevant_ranks(
    retrieved_ids: Sequence[str],
    retrieved_titles: Sequence[str],
    gold_ids: Iterable[str],
    gold_titles: Iterable[str],
) -> list[int]:
    """1-based ranks of the retrieved papers that are gold (by id, or by normalised title)."""
    ids, titles = set(gold_ids), {normalize_title(title) for title in gold_titles}
    found = enumerate(zip(retrieved_ids, retrieved_titles, strict=True), start=1)
    return [rank for rank, (id_, title) in found if id_ in ids or normalize_title(title) in titles]


def retrieval_scores(ranks: Sequence[int], gold_count: int) -> dict[str, float]:
    """hit@k, recall@k, MRR and nDCG@10 (binary relevance) of one question with gold papers."""
    if gold_count <= 0:
        raise ValueError("retrieval metrics need at least one gold paper")
    scores: dict[str, float] = {}
    for k in K_VALUES:
        found = sum(1 for rank in ranks if rank <= k)
        scores[f"hit@{k}"] = 1.0 if found else 0.0
        scores[f"recall@{k}"] = min(found, gold_count) / gold_count
    scores["mrr"] = 1.0 / min(ranks) if ranks else 0.0
    dcg = sum(1.0 / math.log2(rank + 1) for rank in ranks if rank <= RETRIEVAL_DEPTH)
    ideal_ranks = range(1, min(gold_count, RETRIEVAL_DEPTH) + 1)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in ideal_ranks)
    scores["ndcg@10"] = dcg / ideal
    return scores


RETRIEVAL_METRICS = (*(f"{m}@{k}" for m in ("hit", "recall") for k in K_VALUES), "mrr", "ndcg@10")


def key_string_score(answer: str, key_strings: Sequence[str]) -> float | None:
    """1 when every key string occurs in the answer (case-insensitive), else 0; None if no keys."""
    if not key_strings:
        return None
    folded = answer.casefold()
    return 1.0 if all(key.casefold() in folded for key in key_strings) else 0.0


def mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return sum(present) / len(present) if present else None
