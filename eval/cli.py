"""`scholia eval …`: run a suite, compare two runs, check a gate, benchmark performance."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from scholia.settings import Settings

eval_app = typer.Typer(
    help="Evaluate retrieval and answers on a question suite; compare runs; benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class JudgeMetric(StrEnum):
    faithfulness = "faithfulness"
    answer_relevancy = "answer_relevancy"
    context_precision = "context_precision"
    context_recall = "context_recall"
    factual_correctness = "factual_correctness"


class Mode(StrEnum):
    hybrid = "hybrid"
    dense = "dense"
    bm25 = "bm25"
    all = "all"


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    return Settings()


@eval_app.command("run")
def run(
    suite: Annotated[
        str, typer.Argument(help="A suite file (JSON Lines), or a bundled suite name (dev).")
    ],
    judge_url: Annotated[
        str | None,
        typer.Option(
            help="OpenAI-compatible judge (…/v1) for the LLM-judged RAGAS metrics. Default: the answering LLM."
        ),
    ] = None,
    judge_model: Annotated[
        str | None, typer.Option(help="Judge model name. Default: the answering model.")
    ] = None,
    no_judge: Annotated[
        bool, typer.Option("--no-judge", help="Answer and score without the LLM judge.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Run folder; an existing run there is resumed.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Evaluate only the first N questions.")
    ] = None,
    stratify: Annotated[
        bool, typer.Option(help="With --limit: take questions round-robin across types.")
    ] = False,
    types: Annotated[
        list[str] | None, typer.Option("--type", help="Only questions of this type (repeatable).")
    ] = None,
    mode: Annotated[
        Mode, typer.Option(help="Retrieval mode; `all` compares dense, bm25 and hybrid.")
    ] = Mode.hybrid,
    no_llm: Annotated[
        bool, typer.Option("--no-llm", help="Retrieval metrics only: no answers, no judge.")
    ] = False,
    top_k: Annotated[int, typer.Option(min=1, max=20, help="Sources per /ask.")] = 5,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 when a metric misses its threshold.")
    ] = False,
    thresholds: Annotated[
        Path | None, typer.Option(help="Thresholds file (default eval/thresholds.toml).")
    ] = None,
    restart: Annotated[
        bool, typer.Option(help="Discard a previous run in --out instead of resuming it.")
    ] = False,
    judge_max_tokens: Annotated[
        int, typer.Option(min=64, help="Token limit of one judge reply.")
    ] = 512,
    judge_timeout: Annotated[
        float, typer.Option(min=1, help="Seconds one judge call may take.")
    ] = 300.0,
    judge_metrics: Annotated[
        list[JudgeMetric] | None,
        typer.Option(
            "--judge-metric",
            help="Only this LLM-judged metric (repeatable; default all five). Each costs one "
            "to several judge calls per question: minutes on a slow CPU.",
        ),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal)."),
    ] = None,
    record: Annotated[
        bool,
        typer.Option(
            "--record",
            help="Keep every LLM request and its completion in the run folder "
            "(completions.jsonl), for --replay.",
        ),
    ] = False,
    replay: Annotated[
        Path | None,
        typer.Option(
            help="Answer from the completions a --record run kept in this folder, with no LLM "
            "server; implies --no-judge (judge calls are not recorded). A request not in the "
            "recording stops the run (exit 2). With --record: ask the LLM only what the "
            "recording lacks, and record everything (a new recording after a small change).",
        ),
    ] = None,
    max_misses: Annotated[
        int,
        typer.Option(
            "--max-misses",
            min=0,
            help="With --replay: questions whose request is not in the recording that may be "
            "skipped (reported) before the run stops; for a recording made on another CPU.",
        ),
    ] = 0,
) -> None:
    """Evaluate a suite: retrieval metrics, answers, RAGAS scores; writes results.jsonl,
    summary.json, report.md and plots into the run folder."""
    from assistant.api.services import llm_base_url
    from eval.gate import ThresholdsError, gate_passed, load_thresholds, render
    from eval.gate import check as check_gate
    from eval.ragas_eval import JudgeConfig
    from eval.replay import ReplayError
    from eval.runner import LLMDownError, RunConfigError, RunOptions, run_suite
    from eval.suite import SuiteError, load_suite, select
    from ingest.embed import packaged_model_path

    settings = _settings()
    try:
        loaded = load_suite(suite)
        bounds = load_thresholds(thresholds) if check or thresholds else None
    except (SuiteError, ThresholdsError) as error:
        _fail(str(error))
        return
    questions = select(loaded.questions, limit, types, stratify)
    if not questions:
        _fail(f"no question of type {', '.join(types or [])} in {loaded.path}")
    modes = ["dense", "bm25", "hybrid"] if mode is Mode.all else [mode.value]
    answer_mode = settings.retrieval.mode if mode is Mode.all else mode.value
    no_judge = no_judge or _check_completions(record, replay, no_llm, judge_url or judge_model)
    judge = None
    if not no_llm and not no_judge:
        judge = JudgeConfig(
            url=judge_url or llm_base_url(settings),
            model=judge_model or settings.llm.model,
            embedding_model=settings.embedding.model_path or packaged_model_path(),
            max_tokens=judge_max_tokens,
            timeout_s=judge_timeout,
            metrics=tuple(metric.value for metric in judge_metrics or ()),
        )
    options = RunOptions(
        modes=modes,
        answer_mode=answer_mode,
        answers=not no_llm,
        judge=judge,
        top_k=top_k,
        progress=progress,
        record=record,
        replay=replay,
        max_replay_misses=max_misses,
    )
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        kind = "retrieval" if no_llm else "replay" if replay else "answers"
        out = settings.data_dir / "eval-runs" / f"{loaded.name}-{mode.value}-{kind}-{stamp}"
    typer.echo(f"run folder: {out}  (resume: the same command with --out {out})", err=True)
    try:
        summary = asyncio.run(run_suite(loaded, questions, settings, out, options, restart=restart))
    except (RunConfigError, SuiteError, ReplayError) as error:
        _fail(str(error))
        return
    except LLMDownError as error:
        _fail(str(error), code=3)
        return
    _print_headline(summary)
    typer.echo(f"report: {out / 'report.md'}")
    if bounds is not None:
        checks = check_gate(summary["metrics"], bounds)
        typer.echo(render(checks))
        if check and not gate_passed(checks):
            raise typer.Exit(1)


def _check_completions(
    record: bool, replay: Path | None, no_llm: bool, judge_asked: str | None
) -> bool:
    """Refuse --record/--replay combinations that cannot work; True: the judge is off."""
    if replay is None:
        if record and no_llm:
            _fail("--record keeps LLM completions; with --no-llm there are none")
        return False
    if no_llm:
        _fail("--replay answers the questions; drop --no-llm")
    if judge_asked:
        typer.echo("note: --replay runs without the LLM judge (--no-judge)", err=True)
    return True


def _print_headline(summary: dict[str, object]) -> None:
    metrics = summary["metrics"]
    assert isinstance(metrics, dict)
    retrieval = summary["retrieval"]
    assert isinstance(retrieval, dict)
    for mode in retrieval:
        typer.echo(
            f"{mode:>6}: "
            + "  ".join(
                f"{name} {metrics.get(f'retrieval.{mode}.{name}', float('nan')):.3f}"
                for name in ("hit@1", "hit@3", "hit@5", "recall@5", "mrr", "ndcg@10")
            )
        )
    for key in (
        "answers.key_string_accuracy",
        "answers.wrong_decline_rate",
        "answers.decline_rate_unanswerable",
        "answers.rouge_l",
        "answers.chrf",
        "judge.faithfulness",
        "judge.answer_relevancy",
        "judge.context_precision",
        "judge.context_recall",
        "judge.factual_correctness",
        "judge.missing",
    ):
        if key in metrics:
            typer.echo(
                f"{key}: {metrics[key]:.3f}"
                if "missing" not in key
                else f"{key}: {metrics[key]:.0f} of {metrics.get('judge.attempted', 0):.0f}"
            )


@eval_app.command("check")
def check_run(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.")],
    thresholds: Annotated[
        Path | None, typer.Option(help="Thresholds file (default eval/thresholds.toml).")
    ] = None,
) -> None:
    """Check a finished run against the thresholds (exit 1 on failure)."""
    from eval.gate import ThresholdsError, check, gate_passed, load_thresholds, render

    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        _fail(f"{run_dir} is not a finished eval run (no summary.json)")
    try:
        bounds = load_thresholds(thresholds)
    except ThresholdsError as error:
        _fail(str(error))
        return
    checks = check(json.loads(summary_path.read_text())["metrics"], bounds)
    typer.echo(render(checks))
    if not gate_passed(checks):
        raise typer.Exit(1)


@eval_app.command("compare")
def compare(
    run_a: Annotated[Path, typer.Argument(help="The baseline run folder.")],
    run_b: Annotated[Path, typer.Argument(help="The run to compare with it.")],
    out: Annotated[
        Path | None, typer.Option(help="Also write the comparison (Markdown) here.")
    ] = None,
    all_metrics: Annotated[
        bool, typer.Option("--all-metrics", help="Per-type metrics too.")
    ] = False,
) -> None:
    """What improved and what regressed from RUN_A to RUN_B, question by question."""
    from eval.compare import RunNotFoundError, compare_runs, render

    try:
        comparison = compare_runs(run_a, run_b)
    except RunNotFoundError as error:
        _fail(str(error))
        return
    text = render(comparison, all_metrics=all_metrics)
    typer.echo(text)
    if out is not None:
        out.write_text(text)


@eval_app.command("perf")
def perf(
    out: Annotated[
        Path | None, typer.Option(help="Folder for perf.json, perf.md and perf.png.")
    ] = None,
    sizes: Annotated[
        str, typer.Option(help="Ingest benchmark sizes (papers), comma-separated.")
    ] = "50",
    queries: Annotated[int, typer.Option(min=1, help="/search requests to time.")] = 30,
    asks: Annotated[
        int, typer.Option(min=0, help="/ask requests to time (0: skip; each is a full generation).")
    ] = 3,
    skip_ingest: Annotated[
        bool, typer.Option("--skip-ingest", help="Leave out the ingest benchmark.")
    ] = False,
) -> None:
    """Performance: ingest throughput, /search and /ask latency, each beside its raw baseline."""
    from eval.perf import run_perf

    settings = _settings()
    if out is None:
        out = settings.data_dir / "eval-runs" / f"perf-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    try:
        size_list = [int(part) for part in sizes.split(",") if part.strip()]
    except ValueError:
        _fail(f"--sizes must be comma-separated integers, got {sizes!r}")
        return
    report = run_perf(
        settings,
        out,
        sizes=[] if skip_ingest else size_list,
        queries=queries,
        asks=asks,
        log=lambda message: typer.echo(message, err=True),
    )
    typer.echo((out / "perf.md").read_text())
    if report.get("errors"):
        sys.exit(1)


@eval_app.command("concurrency")
def concurrency(
    app_url: Annotated[
        str, typer.Option(help="A running Scholia (loopback), e.g. http://127.0.0.1:8000.")
    ],
    llm_url: Annotated[
        str, typer.Option(help="The LLM server it uses (loopback), e.g. http://127.0.0.1:8100/v1.")
    ],
    levels: Annotated[
        str, typer.Option(help="Concurrent clients per level, comma-separated.")
    ] = "1,4,16",
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for concurrency.json, concurrency.md and concurrency.png."),
    ] = None,
    questions: Annotated[
        int, typer.Option(min=1, help="The first N answerable questions of the dev suite.")
    ] = 8,
    requests: Annotated[
        int | None, typer.Option(min=1, help="Requests per level (default 2 × level, at least 4).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model name (default: the configured one).")
    ] = None,
    time_cap: Annotated[float, typer.Option(min=1, help="Seconds for the whole run.")] = 600.0,
) -> None:
    """/ask throughput and p50/p95 latency at each concurrency, beside the raw LLM on the same prompts."""
    from eval.bench_concurrency import answerable_questions, run_concurrency_benchmark

    settings = _settings()
    try:
        level_list = [int(part) for part in levels.split(",") if part.strip()]
    except ValueError:
        _fail(f"--levels must be comma-separated integers, got {levels!r}")
        return
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = settings.data_dir / "eval-runs" / f"concurrency-{stamp}"
    try:
        run_concurrency_benchmark(
            app_url,
            llm_url,
            model or settings.llm.model,
            answerable_questions(questions),
            level_list,
            out,
            settings=settings,
            requests_per_level=requests,
            time_cap_s=time_cap,
            log=lambda message: typer.echo(message, err=True),
        )
    except (ValueError, RuntimeError) as error:
        _fail(str(error))
        return
    typer.echo((out / "concurrency.md").read_text())


@eval_app.command("load")
def load(
    url: Annotated[
        str, typer.Option(help="A running Scholia (loopback), e.g. http://127.0.0.1:8000.")
    ],
    clients: Annotated[int, typer.Option(min=3, help="Concurrent clients.")] = 32,
    duration: Annotated[
        float, typer.Option(min=1, help="Seconds of load (the requests in flight then finish).")
    ] = 60.0,
    warmup: Annotated[
        float, typer.Option(min=0, help="The first seconds of the load, marked as warm-up.")
    ] = 15.0,
    pid: Annotated[
        int | None,
        typer.Option(help="The app's process id, for its RSS (default: the one on the port)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for load.json, load.md and load.png.")
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal)."),
    ] = None,
) -> None:
    """Concurrent clients mixing /ask, /search and bad requests: throughput, p50/p95/p99 per
    route, statuses, app RSS over time. Exit 1 on an unexpected answer (a 5xx other than
    503/504, a bad request not refused as it should be, a transport error)."""
    from eval.bench_load import run_load_test

    settings = _settings()
    if out is None:
        out = settings.data_dir / "eval-runs" / f"load-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    try:
        report = run_load_test(
            url,
            out,
            clients=clients,
            duration_s=duration,
            warmup_s=warmup,
            pid=pid,
            settings=settings,
            progress=sys.stderr.isatty() if progress is None else progress,
            log=lambda message: typer.echo(message, err=True),
        )
    except (ValueError, RuntimeError) as error:
        _fail(str(error))
        return
    typer.echo((out / "load.md").read_text())
    if report["unexpected"]:
        sys.exit(1)
