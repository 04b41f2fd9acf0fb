"""The CI gate: a thresholds file checked against a run's flat metrics (`summary.json` "metrics").

    [min]                               # fail when the metric is below
    "retrieval.hybrid.hit@5" = 0.85
    [max]                               # fail when the metric is above
    "answers.wrong_decline_rate" = 0.2

A threshold whose metric the run did not produce (answer metrics in a `--no-llm` run, another
retrieval mode) is reported as skipped; a gate that checks nothing fails.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_THRESHOLDS = Path(__file__).resolve().parent / "thresholds.toml"


class ThresholdsError(ValueError):
    pass


@dataclass(frozen=True)
class Check:
    metric: str
    bound: str  # "min" or "max"
    threshold: float
    value: float | None

    @property
    def skipped(self) -> bool:
        return self.value is None

    @property
    def passed(self) -> bool:
        if self.value is None:
            return True
        return self.value >= self.threshold if self.bound == "min" else self.value <= self.threshold


def load_thresholds(path: Path | None = None) -> dict[str, dict[str, float]]:
    path = path or DEFAULT_THRESHOLDS
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as error:
        raise ThresholdsError(f"No thresholds file: {path}") from error
    except tomllib.TOMLDecodeError as error:
        raise ThresholdsError(f"{path}: {error}") from error
    unknown = sorted(set(data) - {"min", "max"})
    if unknown:
        raise ThresholdsError(f"{path}: unknown table(s) {', '.join(unknown)}; use [min] and [max]")
    bounds: dict[str, dict[str, float]] = {}
    for bound in ("min", "max"):
        table = data.get(bound, {})
        if not isinstance(table, dict):
            raise ThresholdsError(f"{path}: [{bound}] must be a table")
        bounds[bound] = {}
        for metric, value in table.items():
            if isinstance(value, dict):
                raise ThresholdsError(
                    f'{path}: [{bound}] {metric}: quote dotted metric names, e.g. "{metric}.…" = 0.5'
                )
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ThresholdsError(f"{path}: [{bound}] {metric} must be a number")
            bounds[bound][metric] = float(value)
    return bounds


def check(metrics: dict[str, float], thresholds: dict[str, dict[str, float]]) -> list[Check]:
    return [
        Check(metric, bound, threshold, metrics.get(metric))
        for bound in ("min", "max")
        for metric, threshold in thresholds.get(bound, {}).items()
    ]


def gate_passed(checks: list[Check]) -> bool:
    applied = [c for c in checks if not c.skipped]
    return bool(applied) and all(c.passed for c in applied)


def render(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        sign = "≥" if c.bound == "min" else "≤"
        if c.skipped:
            status = "skip"
            shown = "not measured"
        else:
            status = "ok  " if c.passed else "FAIL"
            shown = f"{c.value:.4f}"
        lines.append(f"{status} {c.metric} = {shown} (needs {sign} {c.threshold:g})")
    applied = [c for c in checks if not c.skipped]
    failed = [c for c in applied if not c.passed]
    if not applied:
        lines.append("gate: FAILED (no threshold applies to this run)")
    else:
        lines.append(
            f"gate: {'PASSED' if not failed else 'FAILED'} "
            f"({len(applied) - len(failed)}/{len(applied)} checks passed, "
            f"{len(checks) - len(applied)} skipped)"
        )
    return "\n".join(lines)
