"""`scholia eval compare RUN_A RUN_B`: metric deltas and what improved or regressed, per question."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.harness import fmt, table
from eval.ragas_eval import JUDGE_METRICS, NON_LLM_METRICS
from eval.runner import SUMMARY, load_results

# A graded score must move by at least this much to count as a change of that question.
SCORE_DELTA = 0.1
# Metrics where a lower value is better.
LOWER_IS_BETTER = ("wrong_decline_rate", "latency.", ".missing", "errors")


@dataclass
class Change:
    id: str
    type: str
    question: str
    better: list[str] = field(default_factory=list)
    worse: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    run_a: Path
    run_b: Path
    deltas: list[tuple[str, float | None, float | None]]
    changes: list[Change]
    only_a: list[str]
    only_b: list[str]

    @property
    def improved(self) -> list[Change]:
        return [c for c in self.changes if c.better and not c.worse]

    @property
    def regressed(self) -> list[Change]:
        return [c for c in self.changes if c.worse and not c.better]

    @property
    def mixed(self) -> list[Change]:
        return [c for c in self.changes if c.better and c.worse]


class RunNotFoundError(FileNotFoundError):
    pass


def load_run(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    summary_path = path / SUMMARY
    if not summary_path.is_file():
        raise RunNotFoundError(f"{path} is not a finished eval run (no {SUMMARY})")
    return json.loads(summary_path.read_text()), load_results(path)


def _first_rank(record: dict[str, Any], mode: str) -> int | None:
    ranks = record.get("retrieval", {}).get(mode, {}).get("relevant_ranks") or []
    return min(ranks) if ranks else None


def _rank_text(rank: int | None) -> str:
    return f"#{rank}" if rank else "miss"


def question_change(a: dict[str, Any], b: dict[str, Any]) -> Change:
    change = Change(b["id"], b["type"], b["question"])
    for mode in sorted(set(a.get("retrieval", {})) & set(b.get("retrieval", {}))):
        if not (b["retrieval"][mode].get("scores") and a["retrieval"][mode].get("scores")):
            continue
        before, after = _first_rank(a, mode), _first_rank(b, mode)
        if before == after:
            continue
        text = f"{mode} gold rank {_rank_text(before)}→{_rank_text(after)}"
        better = after is not None and (before is None or after < before)
        (change.better if better else change.worse).append(text)
    scores_a, scores_b = a.get("scores") or {}, b.get("scores") or {}
    for metric, label in (("key_string", "key strings"), ("correct_decline", "decline decision")):
        before, after = scores_a.get(metric), scores_b.get(metric)
        if before is None or after is None or before == after:
            continue
        mark = f"{label} {'✓' if before else '✗'}→{'✓' if after else '✗'}"
        (change.better if after > before else change.worse).append(mark)
    for metric in (*NON_LLM_METRICS, *JUDGE_METRICS):
        before, after = scores_a.get(metric), scores_b.get(metric)
        if before is None or after is None or abs(after - before) < SCORE_DELTA:
            continue
        text = f"{metric} {before:.2f}→{after:.2f}"
        (change.better if after > before else change.worse).append(text)
    answer_a, answer_b = a.get("answer") or {}, b.get("answer") or {}
    if answer_a.get("text") is not None and answer_b.get("text") is None and "answer" in b:
        change.worse.append("answer failed")
    if answer_a.get("text") is None and "answer" in a and answer_b.get("text") is not None:
        change.better.append("answer no longer fails")
    return change


def compare_runs(run_a: Path, run_b: Path) -> Comparison:
    summary_a, records_a = load_run(run_a)
    summary_b, records_b = load_run(run_b)
    metrics_a, metrics_b = summary_a.get("metrics", {}), summary_b.get("metrics", {})
    keys = [k for k in metrics_b if k in metrics_a] + [k for k in metrics_a if k not in metrics_b]
    keys += [k for k in metrics_b if k not in metrics_a]
    deltas = [(key, metrics_a.get(key), metrics_b.get(key)) for key in keys]
    changes = []
    for qid, b in records_b.items():
        a = records_a.get(qid)
        if a is None:
            continue
        change = question_change(a, b)
        if change.better or change.worse:
            changes.append(change)
    return Comparison(
        run_a,
        run_b,
        deltas,
        changes,
        only_a=sorted(set(records_a) - set(records_b)),
        only_b=sorted(set(records_b) - set(records_a)),
    )


def _is_overall(metric: str) -> bool:
    """Whole-run metrics, not the per-type breakdown (`retrieval.hybrid.fact.hit@1`)."""
    parts = metric.split(".")
    if parts[0] == "retrieval":
        return len(parts) == 3
    if parts[0] in {"answers", "judge"}:
        return len(parts) == 2 or (len(parts) == 3 and parts[2] in {"missing", "attempted"})
    return True


def _arrow(metric: str, a: float | None, b: float | None) -> str:
    if a is None or b is None or a == b:
        return ""
    lower_better = any(token in metric for token in LOWER_IS_BETTER)
    return "▲" if (b > a) != lower_better else "▼"


def render(comparison: Comparison, all_metrics: bool = False) -> str:
    lines = [
        "# Eval comparison",
        "",
        f"A: `{comparison.run_a}`  ·  B: `{comparison.run_b}`",
        "",
        f"{len(comparison.improved)} improved · {len(comparison.regressed)} regressed · "
        f"{len(comparison.mixed)} mixed (questions in both runs)",
        "",
        "## Metrics (▲ better in B, ▼ worse)",
        "",
    ]
    rows = []
    for metric, a, b in comparison.deltas:
        delta = None if a is None or b is None else b - a
        if not all_metrics and (
            not _is_overall(metric) or (delta == 0 and metric.startswith("latency"))
        ):
            continue
        signed = "—" if delta is None else f"{delta:+.3f}"
        rows.append([metric, fmt(a), fmt(b), signed, _arrow(metric, a, b)])
    lines.append(table(["metric", "A", "B", "Δ", ""], rows))
    for title, group in (
        ("Regressed", comparison.regressed),
        ("Improved", comparison.improved),
        ("Mixed", comparison.mixed),
    ):
        if not group:
            continue
        rows = []
        for change in group:
            what = [*(f"+ {t}" for t in change.better), *(f"− {t}" for t in change.worse)]
            question = " ".join(change.question.split())[:80].replace("|", "/")
            rows.append([change.id, change.type, "; ".join(what), question])
        lines += [
            f"## {title} ({len(group)})",
            "",
            table(["id", "type", "what changed", "question"], rows),
        ]
    if comparison.only_a or comparison.only_b:
        lines += [
            f"Only in A: {', '.join(comparison.only_a) or '—'}",
            f"Only in B: {', '.join(comparison.only_b) or '—'}",
            "",
        ]
    return "\n".join(lines)
