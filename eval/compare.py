"""A run against thresholds (the CI gate: eval/thresholds.toml says how) or against another run
(`scholia eval compare`)."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.harness import cut, fmt, read_jsonl, render
from eval.ragas_eval import JUDGE_METRICS, NON_LLM_METRICS

RESULTS = "results.jsonl"
DEFAULT_THRESHOLDS = Path(__file__).resolve().parent / "thresholds.toml"
# A graded score must move by at least this much to count as a change of that question.
SCORE_DELTA = 0.1
LOWER_IS_BETTER = ("wrong_decline_rate", "latency.", ".missing", "errors")


class ThresholdsError(ValueError):
    pass


class RunNotFoundError(FileNotFoundError):
    pass


def load_thresholds(path: Path | None = None) -> dict[str, dict[str, float]]:
    path = path or DEFAULT_THRESHOLDS
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as error:
        raise ThresholdsError(f"No thresholds file: {path}") from error
    except tomllib.TOMLDecodeError as error:
        raise ThresholdsError(f"{path}: {error}") from error
    if unknown := sorted(set(data) - {"min", "max"}):
        raise ThresholdsError(f"{path}: unknown table(s) {', '.join(unknown)}; use [min] and [max]")
    bounds: dict[str, dict[str, float]] = {"min": {}, "max": {}}
    for bound, metrics in bounds.items():
        for metric, value in data.get(bound, {}).items():
            if isinstance(value, dict):
                hint = f'quote dotted metric names, e.g. "{metric}.…" = 0.5'
                raise ThresholdsError(f"{path}: [{bound}] {metric}: {hint}")
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ThresholdsError(f"{path}: [{bound}] {metric} must be a number")
            metrics[metric] = float(value)
    return bounds


def gate(metrics: dict[str, float], thresholds: dict[str, dict[str, float]]) -> tuple[bool, str]:
    """Whether the run passes (a threshold applies, and all that apply hold), and why."""
    rows = []
    for bound, sign in (("min", "≥"), ("max", "≤")):
        for metric, threshold in thresholds.get(bound, {}).items():
            value = metrics.get(metric)
            ok = value is None or (value >= threshold if bound == "min" else value <= threshold)
            rows.append(dict(metric=metric, value=value, ok=ok, sign=sign, threshold=threshold))
    applied, failed = sum(r["value"] is not None for r in rows), sum(not r["ok"] for r in rows)
    passed = applied > 0 and not failed
    report = render("gate.txt.j2", rows=rows, applied=applied, failed=failed, passed=passed)
    return passed, report.rstrip("\n")


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

    def groups(self) -> dict[str, list[Change]]:
        return {
            "Regressed": [c for c in self.changes if c.worse and not c.better],
            "Improved": [c for c in self.changes if c.better and not c.worse],
            "Mixed": [c for c in self.changes if c.better and c.worse],
        }


def load_run(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A finished run's summary and its latest record of each question."""
    if not (path / "summary.json").is_file():
        raise RunNotFoundError(f"{path} is not a finished eval run (no summary.json)")
    return json.loads((path / "summary.json").read_text(encoding="utf-8")), load_results(path)


def load_results(run: Path) -> dict[str, dict[str, Any]]:
    """The latest record of every question in results.jsonl."""
    return {str(record["id"]): record for record in read_jsonl(run / RESULTS)}


def _first_rank(record: dict[str, Any], mode: str) -> int | None:
    return min(record["retrieval"][mode].get("relevant_ranks") or [0]) or None


def question_change(a: dict[str, Any], b: dict[str, Any]) -> Change:
    change = Change(b["id"], b["type"], b["question"])

    def note(better: bool, text: str) -> None:
        (change.better if better else change.worse).append(text)

    for mode in sorted(set(a.get("retrieval", {})) & set(b.get("retrieval", {}))):
        before, after = _first_rank(a, mode), _first_rank(b, mode)
        scored = a["retrieval"][mode].get("scores") and b["retrieval"][mode].get("scores")
        if scored and before != after:
            shown = [f"#{rank}" if rank else "miss" for rank in (before, after)]
            better = after is not None and (before is None or after < before)
            note(better, f"{mode} gold rank {shown[0]}→{shown[1]}")
    scores_a, scores_b = a.get("scores") or {}, b.get("scores") or {}
    for metric, label in (("key_string", "key strings"), ("correct_decline", "decline decision")):
        before, after = scores_a.get(metric), scores_b.get(metric)
        if before is not None and after is not None and before != after:
            note(after > before, f"{label} {'✓' if before else '✗'}→{'✓' if after else '✗'}")
    for metric in (*NON_LLM_METRICS, *JUDGE_METRICS):
        before, after = scores_a.get(metric), scores_b.get(metric)
        if before is not None and after is not None and abs(after - before) >= SCORE_DELTA:
            note(after > before, f"{metric} {before:.2f}→{after:.2f}")
    failed_a = "answer" in a and (a["answer"] or {}).get("text") is None
    failed_b = "answer" in b and (b["answer"] or {}).get("text") is None
    if failed_a != failed_b and "answer" in a and "answer" in b:
        note(failed_a, "answer no longer fails" if failed_a else "answer failed")
    return change


def compare_runs(run_a: Path, run_b: Path) -> Comparison:
    (summary_a, records_a), (summary_b, records_b) = load_run(run_a), load_run(run_b)
    metrics_a, metrics_b = summary_a.get("metrics", {}), summary_b.get("metrics", {})
    keys = dict.fromkeys([*(k for k in metrics_b if k in metrics_a), *metrics_a, *metrics_b])
    changes = [question_change(records_a[q], b) for q, b in records_b.items() if q in records_a]
    deltas = [(key, metrics_a.get(key), metrics_b.get(key)) for key in keys]
    a, b = set(records_a), set(records_b)
    changed = [c for c in changes if c.better or c.worse]
    return Comparison(run_a, run_b, deltas, changed, sorted(a - b), sorted(b - a))


def _is_overall(metric: str, a: float | None, b: float | None) -> bool:
    """Whole-run metrics, not the per-type breakdown (`retrieval.hybrid.fact.hit@1`) nor a latency
    that did not change."""
    parts = metric.split(".")
    if parts[0] == "retrieval":
        return len(parts) == 3
    if parts[0] in {"answers", "judge"}:
        return len(parts) == 2 or (len(parts) == 3 and parts[2] in {"missing", "attempted"})
    return not (metric.startswith("latency") and a == b)


def _metric_row(metric: str, a: float | None, b: float | None) -> list[str]:
    arrow = ""
    if a is not None and b is not None and a != b:
        lower_better = any(token in metric for token in LOWER_IS_BETTER)
        arrow = "▲" if (b > a) != lower_better else "▼"
    return [metric, fmt(a), fmt(b), "—" if a is None or b is None else f"{b - a:+.3f}", arrow]


def _change_row(c: Change) -> list[str]:
    what = "; ".join([*(f"+ {t}" for t in c.better), *(f"− {t}" for t in c.worse)])
    return [c.id, c.type, what, cut(c.question, 80)]


def render_comparison(comparison: Comparison, all_metrics: bool = False) -> str:
    metrics = [_metric_row(*d) for d in comparison.deltas if all_metrics or _is_overall(*d)]
    groups = {title: [_change_row(c) for c in cs] for title, cs in comparison.groups().items()}
    return render("compare.md.j2", c=comparison, groups=groups, metrics=metrics)
