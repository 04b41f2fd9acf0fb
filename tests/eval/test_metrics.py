from __future__ import annotations

import math
from pathlib import Path

import pytest

from eval.compare import ThresholdsError, gate, load_thresholds
from eval.harness import stats
from eval.metrics import key_string_score, relevant_ranks, retrieval_scores


def test_relevant_ranks_by_id_or_normalised_title() -> None:
    ranks = relevant_ranks(
        ["p1", "p2", "p3"],
        ["Other", "ProDiff: Fast Diffusion", "Third"],
        gold_ids=["p3"],
        gold_titles=["  PRODIFF:  fast   diffusion"],  # case and spacing do not matter
    )
    assert ranks == [2, 3]


def test_single_gold_at_rank_two() -> None:
    scores = retrieval_scores([2], gold_count=1)
    assert scores["hit@1"] == 0.0
    assert scores["hit@3"] == scores["hit@5"] == scores["hit@10"] == 1.0
    assert scores["recall@1"] == 0.0 and scores["recall@3"] == 1.0
    assert scores["mrr"] == 0.5
    assert scores["ndcg@10"] == pytest.approx(1 / math.log2(3))


def test_two_gold_papers() -> None:
    scores = retrieval_scores([1, 4], gold_count=2)
    assert scores["hit@1"] == 1.0
    assert scores["recall@3"] == 0.5 and scores["recall@5"] == 1.0
    ideal = 1 + 1 / math.log2(3)
    assert scores["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5)) / ideal)


def test_miss_and_perfect() -> None:
    miss = retrieval_scores([], gold_count=1)
    assert miss["mrr"] == 0.0 and miss["ndcg@10"] == 0.0 and miss["hit@10"] == 0.0
    assert retrieval_scores([1], 1)["ndcg@10"] == 1.0
    with pytest.raises(ValueError):
        retrieval_scores([1], 0)


def test_key_strings_all_needed_case_insensitive() -> None:
    assert key_string_score("GNNPipe cuts time by 2.45x and 1.58X", ["2.45", "1.58x"]) == 1.0
    assert key_string_score("only 2.45", ["2.45", "1.58"]) == 0.0
    assert key_string_score("anything", []) is None


def test_stats() -> None:
    assert stats([]) == {"n": 0, "p50": None, "p95": None, "p99": None} | {
        "mean": None,
        "min": None,
        "max": None,
    }
    assert stats([5.0])["p95"] == 5.0
    assert stats([1.0, 2.0, 3.0, 4.0]) == {"n": 4, "p50": 2.5, "p95": 3.85, "p99": 3.97} | {
        "mean": 2.5,
        "min": 1.0,
        "max": 4.0,
    }
    assert stats(list(map(float, range(101))))["p95"] == pytest.approx(95.0)
    assert stats([1 / 3], digits=1)["mean"] == 0.3


def test_gate(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(
        '[min]\n"retrieval.hybrid.hit@1" = 0.9\n"answers.key_string_accuracy" = 0.5\n'
        '[max]\n"answers.wrong_decline_rate" = 0.2\n'
    )
    bounds = load_thresholds(path)
    passed, report = gate({"retrieval.hybrid.hit@1": 0.95}, bounds)
    assert passed and "gate: PASSED (1/1 checks passed, 2 skipped)" in report
    assert "skip answers.key_string_accuracy = not measured" in report
    passed, report = gate(
        {"retrieval.hybrid.hit@1": 0.95, "answers.wrong_decline_rate": 0.3}, bounds
    )
    assert not passed and "FAIL answers.wrong_decline_rate = 0.3000 (needs ≤ 0.2)" in report
    assert "gate: FAILED (1/2 checks passed, 1 skipped)" in report
    passed, report = gate({}, bounds)
    assert not passed and "no threshold applies" in report  # nothing applied is a failure


def test_bad_thresholds(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("[min]\nretrieval.hybrid = 0.5\n")  # unquoted dotted key → a table
    with pytest.raises(ThresholdsError, match="quote dotted metric names"):
        load_thresholds(path)
    path.write_text("[minimum]\n")
    with pytest.raises(ThresholdsError, match="unknown table"):
        load_thresholds(path)
    with pytest.raises(ThresholdsError, match="No thresholds file"):
        load_thresholds(tmp_path / "missing.toml")


def test_default_thresholds_load() -> None:
    bounds = load_thresholds()
    assert bounds["min"], "the CI gate needs retrieval thresholds"
    assert all(0 < value <= 1 for value in bounds["min"].values())
