"""A run's per-question records aggregated into summary.json, and its report.md and plots."""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from eval.harness import Panel, fmt, stats, table, write_outputs
from eval.metrics import RETRIEVAL_METRICS, mean
from eval.ragas_eval import JUDGE_METRICS, NON_LLM_METRICS
from eval.suite import Suite
from scholia.settings import Settings

Record = dict[str, Any]
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
    figures = stats(list(values), digits=4)
    return {key: figures[key] for key in ("n", "p50", "p95", "mean", "max")}


def _by_type(records: list[Record], block: Callable[[list[Record]], Any]) -> dict[str, Any]:
    """A block over all records, and the same block for each question type."""
    kinds = _types(records)
    return {
        "all": block(records),
        "by_type": {t: block([r for r in records if r["type"] == t]) for t in kinds},
    }


def _judge_summary(records: list[Record]) -> dict[str, Any]:
    judge = _by_type(records, _judge_block)
    judge["attempted"] = sum(judge["all"][f"{m}.attempted"] for m in JUDGE_METRICS)
    judge["missing"] = sum(judge["all"][f"{m}.missing"] for m in JUDGE_METRICS)
    errors = [
        {"id": r["id"], "metric": metric, "error": message}
        for r in records
        for metric, message in r.get("judge_errors", {}).items()
    ]
    judge["errors"] = errors[:50]
    return judge


def _latency_summary(
    records: list[Record], modes: list[str], answers: bool, judged: bool
) -> dict[str, Any]:
    timings = [r.get("timings", {}) for r in records]
    latency: dict[str, Any] = {
        "retrieve_ms": {
            mode: _latency(
                t["retrieve_ms"][mode] for t in timings if mode in t.get("retrieve_ms", {})
            )
            for mode in modes
        }
    }
    if answers:
        latency["ask_ms"] = _latency(t["ask_ms"] for t in timings if "ask_ms" in t)
        latency["generate_ms"] = _latency(
            t["ask"]["generate"] for t in timings if t.get("ask", {}).get("generate")
        )
    if judged:
        latency["judge_s"] = _latency(t["judge_s"] for t in timings if "judge_s" in t)
    return latency


def summarize(
    records: list[Record],
    *,
    suite: Suite,
    options: dict[str, Any],
    seconds: float,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """`options`: the run's options as `RunOptions.as_dict` gives them."""
    types = _types(records)
    answers, judged = options["answers"], options["answers"] and options["judge"] is not None
    summary: dict[str, Any] = {
        "suite": {
            "name": suite.name,
            "path": str(suite.path),
            "questions_in_suite": len(suite.questions),
            "evaluated": len(records),
            "incomplete": sum(1 for r in records if not r.get("complete", True)),
        },
        "counts_by_type": {t: sum(1 for r in records if r["type"] == t) for t in types},
        "options": options,
        "index": _index_info(settings),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds_this_session": seconds,
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "retrieval": {
            mode: _by_type(records, partial(_retrieval_block, mode=mode))
            for mode in options["modes"]
        },
        "answers": _by_type(records, _answer_block) if answers else None,
        "judge": _judge_summary(records) if judged else None,
        "latency": _latency_summary(records, options["modes"], answers, judged),
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

RETRIEVAL_COLUMNS = ("hit@1", "hit@3", "hit@5", "hit@10", "recall@5", "recall@10", "mrr", "ndcg@10")
ANSWER_HEADER = "type,n,errors,key strings,wrong declines,declines (unanswerable),gold in sources"
ANSWER_HEADER += ",ROUGE-L,chrF,ID ctx precision,ID ctx recall"
ANSWER_NOTE = """Key strings: all of a question's key strings in the answer (case-insensitive; a declined
answer scores 0). Wrong declines: share of answerable questions declined. ROUGE-L, chrF and
ID-based context precision/recall come from `ragas`.
"""


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= width else text[: width - 1] + "…"


def _header(summary: dict[str, Any]) -> str:
    suite, options = summary["suite"], summary["options"]
    answers = f"yes ({options['answer_mode']})" if options["answers"] else "no (--no-llm)"
    judge = options.get("judge")
    text = (
        f"# Evaluation: {suite['name']}\n\n{suite['evaluated']} of {suite['questions_in_suite']} "
        f"questions from `{suite['path']}` · retrieval modes: {', '.join(summary['retrieval'])} · "
        f"answers: {answers} · judge: {judge['model'] + ' at ' + judge['url'] if judge else 'none'}"
        f" · finished {summary['finished']}\n\nQuestions by type: "
        + ", ".join(f"{t} {n}" for t, n in summary["counts_by_type"].items())
        + "\n"
    )
    if suite.get("incomplete"):
        text += (
            f"\n**{suite['incomplete']} question(s) incomplete** (LLM failure); re-run to resume.\n"
        )
    return text


def _retrieval_section(summary: dict[str, Any]) -> list[str]:
    retrieval = summary["retrieval"]
    modes, types = list(retrieval), list(summary["counts_by_type"])
    names = ["hit@1", "hit@3", "hit@5", "hit@10", "recall@5", "recall@10", "MRR", "nDCG@10"]
    rows = [
        [mode, retrieval[mode]["all"]["n"], *(retrieval[mode]["all"][m] for m in RETRIEVAL_COLUMNS)]
        for mode in modes
    ]
    parts = [
        "## Retrieval\n\nPapers with a gold paper only; one result per paper, depth 10.\n",
        table(["mode", "n", *names], rows),
    ]

    def hits(block: dict[str, Any]) -> str:
        return (
            " / ".join(fmt(block.get(m), 2) for m in ("hit@1", "hit@3", "hit@5"))
            if block.get("n")
            else "—"
        )

    rows = []
    for kind in types:
        blocks = [retrieval[mode]["by_type"].get(kind, {}) for mode in modes]
        rows.append([kind, blocks[-1].get("n", 0), *(hits(block) for block in blocks)])
    parts += ["### hit@1 / hit@3 / hit@5 by question type\n", table(["type", "n", *modes], rows)]
    columns = [c for c in RETRIEVAL_COLUMNS if c != "hit@10"]
    for mode in modes:
        by_type = retrieval[mode]["by_type"].items()
        rows = [
            [kind, block["n"], *(block[m] for m in columns)]
            for kind, block in by_type
            if block["n"]
        ]
        header = ["type", "n", *(n for n in names if n != "hit@10")]
        parts += [f"### {mode}: all metrics by type\n", table(header, rows)]
    return parts


def _answer_sections(summary: dict[str, Any]) -> list[str]:
    parts = []
    answers, judge = summary.get("answers"), summary.get("judge")
    if answers:
        columns = "n errors key_string_accuracy wrong_decline_rate decline_rate_unanswerable "
        columns += "source_hit rouge_l chrf id_context_precision id_context_recall"
        blocks = [("**all**", answers["all"]), *answers["by_type"].items()]
        rows = [[kind, *(block[c] for c in columns.split())] for kind, block in blocks]
        parts += ["## Answers\n", table(ANSWER_HEADER.split(","), rows), ANSWER_NOTE]
    if judge:
        blocks = [("**all**", judge["all"]), *judge["by_type"].items()]
        rows = [[kind, *(block[m] for m in JUDGE_METRICS)] for kind, block in blocks]
        rows.append(
            [
                "missing / attempted",
                *(
                    f"{judge['all'][m + '.missing']} / {judge['all'][m + '.attempted']}"
                    for m in JUDGE_METRICS
                ),
            ]
        )
        parts += [
            "## LLM-judged (RAGAS)\n",
            table(["type", *JUDGE_METRICS], rows),
            f"{judge['missing']} of {judge['attempted']} judge scores missing (malformed judge "
            "output, timeouts): averages are over the scores present.\n",
        ]
        if judge["errors"]:
            failures = "".join(
                f"- `{e['id']}` {e['metric']}: {e['error'][:160]}\n" for e in judge["errors"][:10]
            )
            parts.append("Judge failures (first 10):\n\n" + failures)
    return parts


def _latency_and_misses(summary: dict[str, Any], records: list[Record]) -> list[str]:
    latency, modes, options = summary["latency"], list(summary["retrieval"]), summary["options"]
    labels = {f"retrieve ({mode}), ms": latency["retrieve_ms"][mode] for mode in modes}
    for name, label in (
        ("ask_ms", "/ask pipeline, ms"),
        ("generate_ms", "LLM generation, ms"),
        ("judge_s", "judge per question, s"),
    ):
        if latency.get(name):
            labels[label] = latency[name]
    rows = [
        [label, *(block[k] for k in ("n", "p50", "p95", "mean", "max"))]
        for label, block in labels.items()
    ]
    parts = ["## Latency\n", table(["what", "n", "p50", "p95", "mean", "max"], rows)]
    main = options["answer_mode"] if options["answer_mode"] in modes else modes[-1]
    misses = [
        r for r in records if (r["retrieval"].get(main, {}).get("scores") or {}).get("hit@5") == 0.0
    ]
    if misses:
        rows = [
            [
                r["id"],
                r["type"],
                _cut(r["question"], 90),
                _cut("; ".join(r["gold_titles"] or r["gold_ids"]), 70),
                _cut((r["retrieval"][main]["titles"] or ["—"])[0], 70),
            ]
            for r in misses
        ]
        parts += [
            f"## Retrieval misses at 5 ({main})\n",
            table(["id", "type", "question", "gold", f"{main} top 1"], rows),
        ]
    missing_gold = sorted({t for r in records for t in r.get("gold_missing_from_index", [])})
    if missing_gold:
        parts.append(
            "## Gold titles not found in the index\n\n" + "".join(f"- {t}\n" for t in missing_gold)
        )
    return parts


def render_markdown(summary: dict[str, Any], records: list[Record]) -> str:
    parts = [_header(summary), *_retrieval_section(summary), *_answer_sections(summary)]
    parts += _latency_and_misses(summary, records)
    parts.append("## Plots\n\n" + "".join(f"![{name}]({name})\n" for name in PLOTS))
    return "\n".join(parts)


# ----------------------------------------------------------------------------- plots


def _per_type_panels(summary: dict[str, Any]) -> list[Panel]:
    """hit@1, hit@5 and MRR by type for each mode; key strings and declines by type."""
    retrieval, types = summary["retrieval"], list(summary["counts_by_type"])
    with_gold = [t for t in types if any(block["by_type"][t]["n"] for block in retrieval.values())]
    panels = [
        Panel(
            f"retrieval {metric}",
            "bar",
            {
                mode: [block["by_type"][t][metric] for t in with_gold]
                for mode, block in retrieval.items()
            },
            labels=with_gold,
            ylim=(0, 1.25),
        )
        for metric in ("hit@1", "hit@5", "mrr")
    ]
    if summary.get("answers"):
        by_type = summary["answers"]["by_type"]
        labels = [t for t in types if by_type[t]["answered"]]
        declined = [
            by_type[t][
                "decline_rate_unanswerable"
                if by_type[t]["n_unanswerable"]
                else "wrong_decline_rate"
            ]
            for t in labels
        ]
        series = {
            "key strings": [by_type[t]["key_string_accuracy"] for t in labels],
            "declined": declined,
        }
        panels.append(Panel("answers by type", "bar", series, labels=labels, ylim=(0, 1.25)))
    return panels


def _distribution_panels(
    summary: dict[str, Any], records: list[Record]
) -> tuple[list[Panel], list[Panel]]:
    """Score histograms (reciprocal rank, answer and judge scores); latency histograms."""
    modes = list(summary["retrieval"])
    scores = {
        f"reciprocal rank ({mode})": [
            r["retrieval"][mode]["scores"]["mrr"]
            for r in records
            if (r["retrieval"].get(mode) or {}).get("scores")
        ]
        for mode in modes
    }
    metrics = list(NON_LLM_METRICS) + (list(JUDGE_METRICS) if summary.get("judge") else [])
    for metric in metrics if summary.get("answers") else []:
        if present := [v for r in records if (v := _score(r, metric)) is not None]:
            scores[metric] = present
    timings = [r.get("timings", {}) for r in records]
    times = {
        f"retrieve {mode} (ms)": [
            t["retrieve_ms"][mode] for t in timings if mode in t.get("retrieve_ms", {})
        ]
        for mode in modes
    }
    if asks := [t["ask_ms"] / 1000 for t in timings if "ask_ms" in t]:
        times["/ask pipeline (s)"] = asks
    if judged := [t["judge_s"] for t in timings if "judge_s" in t]:
        times["judge per question (s)"] = judged
    bins = [i / 10 for i in range(11)]
    score_panels = [
        Panel(f"{name} (n={len(values)})", "hist", {name: values}, bins=bins)
        for name, values in scores.items()
    ]
    latency_panels = []
    for name, values in times.items():
        figures = stats(values, digits=1)
        title = f"{name}\np50 {fmt(figures['p50'], 1)} · p95 {fmt(figures['p95'], 1)}"
        latency_panels.append(Panel(title, "hist", {name: values}))
    return score_panels, latency_panels


def write_report(out_dir: Path, summary: dict[str, Any], records: list[Record]) -> None:
    """summary.json, report.md, and the plots when there are records."""
    outputs: dict[str, Any] = {
        "summary.json": summary,
        "report.md": render_markdown(summary, records),
    }
    if records:
        scores, latency = _distribution_panels(summary, records)
        outputs |= dict(zip(PLOTS, (_per_type_panels(summary), scores, latency), strict=True))
    write_outputs(out_dir, outputs)
