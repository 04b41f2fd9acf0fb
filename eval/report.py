"""Aggregate per-question records into summary.json, and write report.md with PNG plots."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eval.metrics import RETRIEVAL_METRICS, mean, percentile
from eval.ragas_eval import JUDGE_METRICS, NON_LLM_METRICS
from eval.suite import Suite

if TYPE_CHECKING:
    from eval.runner import RunOptions
    from scholia.settings import Settings

Record = dict[str, Any]
ANSWER_METRICS = (
    "key_string_accuracy",
    "wrong_decline_rate",
    "decline_rate_unanswerable",
    "source_hit",
    *NON_LLM_METRICS,
)
PLOTS = ("per_type.png", "scores.png", "latency.png")


# ----------------------------------------------------------------------------- summary


def _types(records: list[Record]) -> list[str]:
    return list(dict.fromkeys(r["type"] for r in records))


def _retrieval_block(records: list[Record], mode: str) -> dict[str, Any]:
    rows = [
        r["retrieval"][mode]["scores"]
        for r in records
        if mode in r.get("retrieval", {}) and r["retrieval"][mode].get("scores")
    ]
    block: dict[str, Any] = {"n": len(rows)}
    for metric in RETRIEVAL_METRICS:
        block[metric] = mean(row[metric] for row in rows)
    return block


def _answered(records: list[Record]) -> list[Record]:
    return [r for r in records if r.get("answer") and r["answer"].get("text") is not None]


def _score(record: Record, metric: str) -> float | None:
    value = record.get("scores", {}).get(metric)
    return None if value is None else float(value)


def _answer_block(records: list[Record]) -> dict[str, Any]:
    tried = [r for r in records if "answer" in r]
    ok = _answered(tried)
    answerable = [r for r in ok if r["answerable"]]
    unanswerable = [r for r in ok if not r["answerable"]]
    keyed = [r for r in ok if _score(r, "key_string") is not None]
    with_gold = [r for r in answerable if r.get("gold_ids") or r.get("gold_missing_from_index")]
    block: dict[str, Any] = {
        "n": len(tried),
        "answered": len(ok),
        "errors": len(tried) - len(ok),
        "n_answerable": len(answerable),
        "n_unanswerable": len(unanswerable),
        "n_key_string": len(keyed),
        "key_string_accuracy": mean(_score(r, "key_string") for r in keyed),
        "wrong_decline_rate": mean(_score(r, "declined") for r in answerable),
        "decline_rate_unanswerable": mean(_score(r, "declined") for r in unanswerable),
        "source_hit": mean(1.0 if r["answer"].get("relevant_ranks") else 0.0 for r in with_gold),
    }
    for metric in NON_LLM_METRICS:
        block[metric] = mean(_score(r, metric) for r in ok)
    return block


def _judge_block(records: list[Record]) -> dict[str, Any]:
    block: dict[str, Any] = {}
    for metric in JUDGE_METRICS:
        judged = [r for r in records if metric in r.get("judged", [])]
        block[metric] = mean(_score(r, metric) for r in judged)
        block[f"{metric}.attempted"] = len(judged)
        block[f"{metric}.missing"] = sum(1 for r in judged if _score(r, metric) is None)
    return block


def _latency(values: Iterable[float]) -> dict[str, float | int | None]:
    data = list(values)
    return {
        "n": len(data),
        "p50": _round(percentile(data, 50)),
        "p95": _round(percentile(data, 95)),
        "mean": _round(mean(data)),
        "max": _round(max(data) if data else None),
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def summarize(
    records: list[Record],
    *,
    suite: Suite,
    options: RunOptions,
    seconds: float,
    settings: Settings | None = None,
) -> dict[str, Any]:
    from eval.runner import options_dict

    types = _types(records)
    retrieval: dict[str, Any] = {}
    for mode in options.modes:
        retrieval[mode] = {
            "all": _retrieval_block(records, mode),
            "by_type": {
                t: _retrieval_block([r for r in records if r["type"] == t], mode) for t in types
            },
        }
    answers = judge = None
    if options.answers:
        answers = {
            "all": _answer_block(records),
            "by_type": {t: _answer_block([r for r in records if r["type"] == t]) for t in types},
        }
    if options.answers and options.judge is not None:
        all_block = _judge_block(records)
        errors = [
            {"id": r["id"], "metric": metric, "error": message}
            for r in records
            for metric, message in r.get("judge_errors", {}).items()
        ]
        judge = {
            "all": all_block,
            "by_type": {t: _judge_block([r for r in records if r["type"] == t]) for t in types},
            "attempted": sum(all_block[f"{m}.attempted"] for m in JUDGE_METRICS),
            "missing": sum(all_block[f"{m}.missing"] for m in JUDGE_METRICS),
            "errors": errors[:50],
        }
    timings = [r.get("timings", {}) for r in records]
    latency: dict[str, Any] = {
        "retrieve_ms": {
            mode: _latency(
                t["retrieve_ms"][mode] for t in timings if mode in t.get("retrieve_ms", {})
            )
            for mode in options.modes
        }
    }
    if options.answers:
        latency["ask_ms"] = _latency(t["ask_ms"] for t in timings if "ask_ms" in t)
        latency["generate_ms"] = _latency(
            t["ask"]["generate"] for t in timings if t.get("ask", {}).get("generate")
        )
    if judge is not None:
        latency["judge_s"] = _latency(t["judge_s"] for t in timings if "judge_s" in t)

    summary: dict[str, Any] = {
        "suite": {
            "name": suite.name,
            "path": str(suite.path),
            "questions_in_suite": len(suite.questions),
            "evaluated": len(records),
            "incomplete": sum(1 for r in records if not r.get("complete", True)),
        },
        "counts_by_type": {t: sum(1 for r in records if r["type"] == t) for t in types},
        "options": options_dict(options),
        "index": _index_info(settings),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds_this_session": seconds,
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "retrieval": retrieval,
        "answers": answers,
        "judge": judge,
        "latency": latency,
    }
    summary["metrics"] = flatten(summary)
    return summary


def _index_info(settings: Settings | None) -> dict[str, Any] | None:
    if settings is None:
        return None
    return {
        "data_dir": str(settings.data_dir),
        "chroma_url": settings.index.chroma_url,
        "collection": settings.index.collection,
        "retrieval": settings.retrieval.model_dump(),
    }


def flatten(summary: dict[str, Any]) -> dict[str, float]:
    """Dotted metric names → values: what thresholds and `compare` work on."""
    flat: dict[str, float] = {}

    def put(key: str, value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            flat[key] = round(float(value), 6)

    for mode, block in (summary.get("retrieval") or {}).items():
        for metric, value in block["all"].items():
            put(f"retrieval.{mode}.{metric}", value)
        for kind, sub in block["by_type"].items():
            for metric, value in sub.items():
                put(f"retrieval.{mode}.{kind}.{metric}", value)
    for section in ("answers", "judge"):
        block = summary.get(section)
        if not block:
            continue
        for metric, value in block["all"].items():
            put(f"{section}.{metric}", value)
        for kind, sub in block["by_type"].items():
            for metric, value in sub.items():
                put(f"{section}.{kind}.{metric}", value)
        if section == "judge":
            put("judge.missing", block["missing"])
            put("judge.attempted", block["attempted"])
    for name, block in (summary.get("latency") or {}).items():
        if name == "retrieve_ms":
            for mode, stats in block.items():
                for stat in ("p50", "p95"):
                    put(f"latency.retrieve_ms.{mode}.{stat}", stats.get(stat))
        else:
            for stat in ("p50", "p95"):
                put(f"latency.{name}.{stat}", block.get(stat))
    return flat


# ----------------------------------------------------------------------------- report.md


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def render_markdown(summary: dict[str, Any], records: list[Record]) -> str:
    suite = summary["suite"]
    options = summary["options"]
    modes = list(summary["retrieval"])
    types = list(summary["counts_by_type"])
    lines = [
        f"# Evaluation: {suite['name']}",
        "",
        f"{suite['evaluated']} of {suite['questions_in_suite']} questions from `{suite['path']}`"
        f" · retrieval modes: {', '.join(modes)}"
        f" · answers: {'yes (' + options['answer_mode'] + ')' if options['answers'] else 'no (--no-llm)'}"
        f" · judge: {options['judge']['model'] + ' at ' + options['judge']['url'] if options.get('judge') else 'none'}"
        f" · finished {summary['finished']}",
        "",
        "Questions by type: " + ", ".join(f"{t} {n}" for t, n in summary["counts_by_type"].items()),
        "",
    ]
    if suite.get("incomplete"):
        lines += [
            f"**{suite['incomplete']} question(s) incomplete** (LLM failure); re-run to resume.",
            "",
        ]

    lines += [
        "## Retrieval",
        "",
        "Papers with a gold paper only; one result per paper, depth 10.",
        "",
    ]
    header = [
        "mode",
        "n",
        "hit@1",
        "hit@3",
        "hit@5",
        "hit@10",
        "recall@5",
        "recall@10",
        "MRR",
        "nDCG@10",
    ]
    rows = []
    for mode in modes:
        block = summary["retrieval"][mode]["all"]
        rows.append(
            [
                mode,
                block["n"],
                *(
                    block[m]
                    for m in (
                        "hit@1",
                        "hit@3",
                        "hit@5",
                        "hit@10",
                        "recall@5",
                        "recall@10",
                        "mrr",
                        "ndcg@10",
                    )
                ),
            ]
        )
    lines += _table(header, rows)

    lines += ["### hit@1 / hit@3 / hit@5 by question type", ""]
    header = ["type", "n", *modes]
    rows = []
    for kind in types:
        cells: list[Any] = []
        n = 0
        for mode in modes:
            block = summary["retrieval"][mode]["by_type"].get(kind, {})
            n = block.get("n", 0)
            cells.append(
                " / ".join(fmt(block.get(m), 2) for m in ("hit@1", "hit@3", "hit@5")) if n else "—"
            )
        rows.append([kind, n, *cells])
    lines += _table(header, rows)

    for mode in modes:
        lines += [f"### {mode}: all metrics by type", ""]
        header = ["type", "n", "hit@1", "hit@3", "hit@5", "recall@5", "recall@10", "MRR", "nDCG@10"]
        rows = []
        for kind, block in summary["retrieval"][mode]["by_type"].items():
            if block["n"]:
                rows.append(
                    [
                        kind,
                        block["n"],
                        *(
                            block[m]
                            for m in (
                                "hit@1",
                                "hit@3",
                                "hit@5",
                                "recall@5",
                                "recall@10",
                                "mrr",
                                "ndcg@10",
                            )
                        ),
                    ]
                )
        lines += _table(header, rows)

    answers = summary.get("answers")
    if answers:
        lines += ["## Answers", ""]
        header = [
            "type",
            "n",
            "errors",
            "key strings",
            "wrong declines",
            "declines (unanswerable)",
            "gold in sources",
            "ROUGE-L",
            "chrF",
            "ID ctx precision",
            "ID ctx recall",
        ]
        rows = []
        for kind, block in [("**all**", answers["all"]), *answers["by_type"].items()]:
            rows.append(
                [
                    kind,
                    block["n"],
                    block["errors"],
                    block["key_string_accuracy"],
                    block["wrong_decline_rate"],
                    block["decline_rate_unanswerable"],
                    block["source_hit"],
                    *(block[m] for m in NON_LLM_METRICS[2:] + NON_LLM_METRICS[:2]),
                ]
            )
        lines += _table(header, rows)
        lines += [
            "Key strings: all of a question's key strings in the answer (case-insensitive; a declined answer scores 0). "
            "Wrong declines: share of answerable questions declined. ROUGE-L, chrF and ID-based context precision/recall come from `ragas`.",
            "",
        ]

    judge = summary.get("judge")
    if judge:
        lines += ["## LLM-judged (RAGAS)", ""]
        header = ["type", *JUDGE_METRICS]
        rows = [["**all**", *(judge["all"][m] for m in JUDGE_METRICS)]]
        rows += [
            [kind, *(block[m] for m in JUDGE_METRICS)] for kind, block in judge["by_type"].items()
        ]
        rows.append(
            [
                "missing / attempted",
                *(
                    f"{judge['all'][m + '.missing']} / {judge['all'][m + '.attempted']}"
                    for m in JUDGE_METRICS
                ),
            ]
        )
        lines += _table(header, rows)
        lines += [
            f"{judge['missing']} of {judge['attempted']} judge scores missing (malformed judge output, timeouts): "
            "averages are over the scores present.",
            "",
        ]
        if judge["errors"]:
            lines += ["Judge failures (first 10):", ""]
            lines += [
                f"- `{e['id']}` {e['metric']}: {e['error'][:160]}" for e in judge["errors"][:10]
            ]
            lines += [""]

    lines += ["## Latency", ""]
    header = ["what", "n", "p50", "p95", "mean", "max"]
    rows = []
    for mode, stats in summary["latency"]["retrieve_ms"].items():
        rows.append(
            [
                f"retrieve ({mode}), ms",
                stats["n"],
                stats["p50"],
                stats["p95"],
                stats["mean"],
                stats["max"],
            ]
        )
    for name, label in (
        ("ask_ms", "/ask pipeline, ms"),
        ("generate_ms", "LLM generation, ms"),
        ("judge_s", "judge per question, s"),
    ):
        stats = summary["latency"].get(name)
        if stats:
            rows.append(
                [label, stats["n"], stats["p50"], stats["p95"], stats["mean"], stats["max"]]
            )
    lines += _table(header, rows)

    main_mode = options["answer_mode"] if options["answer_mode"] in modes else modes[-1]
    misses = [
        r
        for r in records
        if (r["retrieval"].get(main_mode, {}).get("scores") or {}).get("hit@5") == 0.0
    ]
    if misses:
        lines += [f"## Retrieval misses at 5 ({main_mode})", ""]
        header = ["id", "type", "question", "gold", f"{main_mode} top 1"]
        rows = [
            [
                r["id"],
                r["type"],
                _cut(r["question"], 90),
                _cut("; ".join(r["gold_titles"] or r["gold_ids"]), 70),
                _cut((r["retrieval"][main_mode]["titles"] or ["—"])[0], 70),
            ]
            for r in misses
        ]
        lines += _table(header, rows)
    missing_gold = sorted({t for r in records for t in r.get("gold_missing_from_index", [])})
    if missing_gold:
        lines += ["## Gold titles not found in the index", ""]
        lines += [f"- {title}" for title in missing_gold] + [""]

    lines += ["## Plots", ""]
    lines += [f"![{name}]({name})" for name in PLOTS] + [""]
    return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= width else text[: width - 1] + "…"


# ----------------------------------------------------------------------------- plots


def write_plots(out_dir: Path, summary: dict[str, Any], records: list[Record]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(summary["retrieval"])
    types = list(summary["counts_by_type"])
    written: list[Path] = []

    # Per-type bars: hit@1, hit@5, MRR per mode (and key-string accuracy when answered).
    panels: list[tuple[str, list[str], dict[str, list[float]]]] = []
    with_gold = [t for t in types if any(summary["retrieval"][m]["by_type"][t]["n"] for m in modes)]
    for metric in ("hit@1", "hit@5", "mrr"):
        series = {
            mode: [summary["retrieval"][mode]["by_type"][t].get(metric) or 0.0 for t in with_gold]
            for mode in modes
        }
        panels.append((f"retrieval {metric}", with_gold, series))
    if summary.get("answers"):
        by_type = summary["answers"]["by_type"]
        labels = [t for t in types if by_type[t]["answered"]]
        panels.append(
            (
                "answers by type",
                labels,
                {
                    "key strings": [by_type[t]["key_string_accuracy"] or 0.0 for t in labels],
                    "declined": [
                        (
                            by_type[t]["decline_rate_unanswerable"]
                            if by_type[t]["n_unanswerable"]
                            else by_type[t]["wrong_decline_rate"]
                        )
                        or 0.0
                        for t in labels
                    ],
                },
            )
        )
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (title, labels, series) in zip(axes[0], panels, strict=True):
        width = 0.8 / max(len(series), 1)
        for index, (label, heights) in enumerate(series.items()):
            xs = [i + index * width for i in range(len(labels))]
            ax.bar(xs, heights, width, label=label)
        ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(labels))])
        ax.set_xticklabels(labels, rotation=30, ha="right")
        ax.set_ylim(0, 1.25)
        ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
        ax.set_title(title)
        ax.legend(fontsize=8, ncol=len(series), loc="upper center")
    fig.tight_layout()
    written.append(_save(fig, out_dir / "per_type.png"))

    # Score distributions: reciprocal rank per mode; answer and judge scores when present.
    distributions: dict[str, list[float]] = {}
    for mode in modes:
        distributions[f"reciprocal rank ({mode})"] = [
            r["retrieval"][mode]["scores"]["mrr"]
            for r in records
            if (r["retrieval"].get(mode) or {}).get("scores")
        ]
    answer_metrics = list(NON_LLM_METRICS) + (list(JUDGE_METRICS) if summary.get("judge") else [])
    if summary.get("answers"):
        for metric in answer_metrics:
            present = [v for r in records if (v := _score(r, metric)) is not None]
            if present:
                distributions[metric] = present
    columns = min(4, len(distributions))
    rows_n = -(-len(distributions) // columns)
    fig, axes = plt.subplots(rows_n, columns, figsize=(4 * columns, 3 * rows_n), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for ax, (name, scores) in zip(axes.flat, distributions.items(), strict=False):
        ax.set_visible(True)
        ax.hist(scores, bins=[i / 10 for i in range(11)], color="#4C72B0", edgecolor="white")
        ax.set_title(f"{name} (n={len(scores)})", fontsize=9)
        ax.set_xlim(0, 1)
    fig.tight_layout()
    written.append(_save(fig, out_dir / "scores.png"))

    # Latency histograms.
    latency_panels: dict[str, list[float]] = {}
    for mode in modes:
        latency_panels[f"retrieve {mode} (ms)"] = [
            r["timings"]["retrieve_ms"][mode]
            for r in records
            if mode in r.get("timings", {}).get("retrieve_ms", {})
        ]
    asks = [r["timings"]["ask_ms"] / 1000 for r in records if "ask_ms" in r.get("timings", {})]
    if asks:
        latency_panels["/ask pipeline (s)"] = asks
    judged = [r["timings"]["judge_s"] for r in records if "judge_s" in r.get("timings", {})]
    if judged:
        latency_panels["judge per question (s)"] = judged
    fig, axes = plt.subplots(
        1, len(latency_panels), figsize=(4 * len(latency_panels), 3), squeeze=False
    )
    for ax, (name, times) in zip(axes[0], latency_panels.items(), strict=True):
        ax.hist(times, bins=20, color="#55A868", edgecolor="white")
        p50, p95 = percentile(times, 50), percentile(times, 95)
        ax.set_title(f"{name}\np50 {fmt(p50, 1)} · p95 {fmt(p95, 1)}", fontsize=9)
    fig.tight_layout()
    written.append(_save(fig, out_dir / "latency.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(out_dir: Path, summary: dict[str, Any], records: list[Record]) -> Path:
    if records:
        write_plots(out_dir, summary, records)
    path = out_dir / "report.md"
    path.write_text(render_markdown(summary, records))
    return path
