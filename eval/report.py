"""A run's per-question records aggregated into summary.json, and its report.md and plots."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from eval.harness import Panel, cut, describe_machine, now, render, stats, write_outputs
from eval.metrics import RETRIEVAL_METRICS, mean
from eval.ragas_eval import JUDGE_METRICS, NON_LLM_METRICS
from eval.suite import Suite
from scholia.settings import Settings

Record = dict[str, Any]
LATENCY_LABELS = {"ask_ms": "/ask pipeline, ms", "generate_ms": "LLM generation, ms"}
LATENCY_LABELS["judge_s"] = "judge per question, s"


def _score(record: Record, metric: str) -> float | None:
    value = record.get("scores", {}).get(metric)
    return None if value is None else float(value)


def _retrieval_block(mode: str, records: list[Record]) -> dict[str, Any]:
    rows = [s for r in records if (s := (r["retrieval"].get(mode) or {}).get("scores"))]
    return {"n": len(rows)} | {m: mean(row[m] for row in rows) for m in RETRIEVAL_METRICS}


def _answer_block(records: list[Record]) -> dict[str, Any]:
    tried = [r for r in records if "answer" in r]
    ok = [r for r in tried if r["answer"] and r["answer"].get("text") is not None]
    answerable = [r for r in ok if r["answerable"]]
    unanswerable = [r for r in ok if not r["answerable"]]
    keyed = [r for r in ok if _score(r, "key_string") is not None]
    with_gold = [r for r in answerable if r.get("gold_ids") or r.get("gold_missing_from_index")]
    counts = {"n": len(tried), "answered": len(ok), "errors": len(tried) - len(ok)}
    counts |= {"n_answerable": len(answerable), "n_unanswerable": len(unanswerable)}
    return counts | {
        "n_key_string": len(keyed),
        "key_string_accuracy": mean(_score(r, "key_string") for r in keyed),
        "wrong_decline_rate": mean(_score(r, "declined") for r in answerable),
        "decline_rate_unanswerable": mean(_score(r, "declined") for r in unanswerable),
        "source_hit": mean(float(bool(r["answer"].get("relevant_ranks"))) for r in with_gold),
        **{metric: mean(_score(r, metric) for r in ok) for metric in NON_LLM_METRICS},
    }


def _judge_block(records: list[Record]) -> dict[str, Any]:
    block: dict[str, Any] = {}
    for metric in JUDGE_METRICS:
        judged = [r for r in records if metric in r.get("judged", [])]
        block[metric] = mean(_score(r, metric) for r in judged)
        block[f"{metric}.attempted"] = len(judged)
        block[f"{metric}.missing"] = sum(1 for r in judged if _score(r, metric) is None)
    return block


def _by_type(records: list[Record], block: Callable[[list[Record]], Any]) -> dict[str, Any]:
    types = dict.fromkeys(r["type"] for r in records)  # in the order first met
    by_type = {t: block([r for r in records if r["type"] == t]) for t in types}
    return {"all": block(records), "by_type": by_type}


def _latency(records: list[Record], modes: list[str], answers: bool, judged: bool) -> dict:
    """n, p50, p95, mean and max of each timing: retrieve_ms.MODE, ask_ms, generate_ms, judge_s."""
    names = [f"retrieve_ms.{mode}" for mode in modes]
    names += ["ask_ms", "generate_ms"] * answers + ["judge_s"] * judged
    series: dict[str, list[float]] = {name: [] for name in names}
    for timings in (r.get("timings", {}) for r in records):
        found = {f"retrieve_ms.{mode}": ms for mode, ms in timings.get("retrieve_ms", {}).items()}
        found |= {"ask_ms": timings.get("ask_ms"), "judge_s": timings.get("judge_s")}
        found["generate_ms"] = (timings.get("ask") or {}).get("generate") or None
        for name, value in found.items():
            if value is not None and name in series:
                series[name].append(value)
    every = {name: stats(values, digits=4) for name, values in series.items()}
    return {name: {k: every[name][k] for k in ("n", "p50", "p95", "mean", "max")} for name in names}


def summarize(
    records: list[Record],
    suite: Suite,
    options: dict[str, Any],  # `dataclasses.asdict` of the RunOptions
    seconds: float,
    settings: Settings | None = None,
) -> dict[str, Any]:
    modes, answers = options["modes"], options["answers"]
    judged = answers and options["judge"] is not None
    judge = _by_type(records, _judge_block) if judged else None
    if judge is not None:
        judge["attempted"] = sum(judge["all"][f"{m}.attempted"] for m in JUDGE_METRICS)
        judge["missing"] = sum(judge["all"][f"{m}.missing"] for m in JUDGE_METRICS)
        errors = [(r["id"], m, e) for r in records for m, e in r.get("judge_errors", {}).items()]
        judge["errors"] = [{"id": i, "metric": m, "error": e} for i, m, e in errors[:50]]
    index = settings and {
        "data_dir": str(settings.data_dir),
        "chroma_url": settings.index.chroma_url,
        "collection": settings.index.collection,
        "retrieval": settings.retrieval.model_dump(),
    }
    summary: dict[str, Any] = {
        "suite": {
            "name": suite.name,
            "path": str(suite.path),
            "questions_in_suite": len(suite.questions),
            "evaluated": len(records),
            "incomplete": sum(1 for r in records if not r.get("complete", True)),
        },
        "counts_by_type": dict(Counter(r["type"] for r in records)),
        "options": options,
        "index": index,
        "finished": now(),
        "seconds_this_session": seconds,
        "machine": describe_machine(),
        "retrieval": {mode: _by_type(records, partial(_retrieval_block, mode)) for mode in modes},
        "answers": _by_type(records, _answer_block) if answers else None,
        "judge": judge,
        "latency": _latency(records, modes, answers, judged),
    }
    return summary | {"metrics": flatten(summary)}


def flatten(summary: dict[str, Any]) -> dict[str, float]:
    """Dotted metric names → values: what thresholds and `compare` work on."""
    sections = {f"retrieval.{mode}": b for mode, b in (summary.get("retrieval") or {}).items()}
    sections |= {name: summary[name] for name in ("answers", "judge") if summary.get(name)}
    flat: dict[str, Any] = {}
    for prefix, section in sections.items():
        flat |= {f"{prefix}.{metric}": value for metric, value in section["all"].items()}
        for kind, block in section["by_type"].items():
            flat |= {f"{prefix}.{kind}.{metric}": value for metric, value in block.items()}
        if prefix == "judge":
            flat |= {"judge.missing": section["missing"], "judge.attempted": section["attempted"]}
    for name, block in (summary.get("latency") or {}).items():
        flat |= {f"latency.{name}.{stat}": block.get(stat) for stat in ("p50", "p95")}
    return {
        key: round(float(value), 6)
        for key, value in flat.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _miss(r: Record, mode: str) -> list[str]:
    gold = "; ".join(r["gold_titles"] or r["gold_ids"])
    top = (r["retrieval"][mode]["titles"] or ["—"])[0]
    return [r["id"], r["type"], cut(r["question"], 90), cut(gold, 70), cut(top, 70)]


def render_markdown(summary: dict[str, Any], records: list[Record]) -> str:
    modes, latency = list(summary["retrieval"]), summary["latency"]
    answer_mode = summary["options"]["answer_mode"]
    main = answer_mode if answer_mode in modes else modes[-1]
    missed = (r for r in records if (r["retrieval"][main].get("scores") or {}).get("hit@5") == 0.0)
    misses = [_miss(r, main) for r in missed]
    times = {f"retrieve ({mode}), ms": latency[f"retrieve_ms.{mode}"] for mode in modes}
    times |= {label: latency[name] for name, label in LATENCY_LABELS.items() if latency.get(name)}
    judged = {}
    if judge := summary.get("judge"):
        every = judge["all"]
        counts = {m: f"{every[m + '.missing']} / {every[m + '.attempted']}" for m in JUDGE_METRICS}
        judged = {"**all**": every, **judge["by_type"], "missing / attempted": counts}
    retrieval, answers = summary["retrieval"], summary["answers"] or {"all": {}, "by_type": {}}
    return render(
        "report.md.j2",
        s=summary,
        overall={mode: retrieval[mode]["all"] for mode in modes},
        by_type={m: {k: b for k, b in retrieval[m]["by_type"].items() if b["n"]} for m in modes},
        answers={"**all**": answers["all"], **answers["by_type"]},
        judged=judged,
        latency=times,
        main=main,
        misses=misses,
        missing_gold=sorted({t for r in records for t in r.get("gold_missing_from_index", [])}),
    )


def _per_type_panels(summary: dict[str, Any]) -> list[Panel]:
    """Bars by question type: retrieval by mode, and the answers."""
    ylim = (0.0, 1.25)  # room above 1 for the legend
    by_mode = {mode: block["by_type"] for mode, block in summary["retrieval"].items()}
    gold = [t for t in summary["counts_by_type"] if any(b[t]["n"] for b in by_mode.values())]
    panels = []
    for metric in ("hit@1", "hit@5", "mrr"):
        series = {mode: [blocks[t][metric] for t in gold] for mode, blocks in by_mode.items()}
        panels.append(Panel(f"retrieval {metric}", "bar", series, labels=gold, ylim=ylim))
    if summary["answers"]:
        answered = {t: b for t, b in summary["answers"]["by_type"].items() if b["answered"]}
        columns = {"key strings": "key_string_accuracy", "wrong declines": "wrong_decline_rate"}
        columns["right declines"] = "decline_rate_unanswerable"
        series = {name: [b[key] for b in answered.values()] for name, key in columns.items()}
        panels.append(Panel("answers by type", "bar", series, labels=list(answered), ylim=ylim))
    return panels


def _score_panels(summary: dict[str, Any], records: list[Record]) -> list[Panel]:
    """A histogram of each per-question score: reciprocal rank by mode, the RAGAS scores."""
    scores = {}
    for mode in summary["retrieval"]:
        ranked = [r["retrieval"].get(mode, {}).get("scores") for r in records]
        scores[f"reciprocal rank ({mode})"] = [s["mrr"] for s in ranked if s]
    judged = JUDGE_METRICS if summary["judge"] else ()
    for metric in (*NON_LLM_METRICS, *judged) if summary["answers"] else ():
        if present := [v for r in records if (v := _score(r, metric)) is not None]:
            scores[metric] = present
    tenths = [i / 10 for i in range(11)]
    return [Panel(f"{n} (n={len(v)})", "hist", {n: v}, bins=tenths) for n, v in scores.items()]


def write_report(out_dir: Path, summary: dict[str, Any], records: list[Record]) -> None:
    report = render_markdown(summary, records)
    outputs: dict[str, Any] = {"summary.json": summary, "report.md": report}
    if records:
        outputs["per_type.png"] = _per_type_panels(summary)
        outputs["scores.png"] = _score_panels(summary, records)
    write_outputs(out_dir, outputs)
