"""`scholia eval …`: run a suite, compare two runs, check a gate, benchmark performance."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from eval.harness import render, write_outputs
from eval.ragas_eval import JUDGE_METRICS, JudgeConfig
from scholia.settings import Settings

eval_app = typer.Typer(
    help="Evaluate retrieval and answers on a question suite; compare runs; benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
JudgeMetric = StrEnum("JudgeMetric", [(m, m) for m in JUDGE_METRICS])  # type: ignore[misc]
Mode = StrEnum("Mode", ["hybrid", "dense", "bm25", "all"])  # all: dense, bm25 and hybrid
_log = partial(typer.echo, err=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _option(help: str, *names: str, **limits: Any) -> Any:
    return typer.Option(*names, help=help, **limits)


Progress = Annotated[
    bool | None, _option("Progress bar (default: on a terminal).", "--progress/--no-progress")
]
Thresholds = Annotated[Path | None, _option("Thresholds file (default eval/thresholds.toml).")]
Out = Annotated[Path | None, _option("Output folder (default: a new one under the data dir).")]
JudgeMetrics = Annotated[
    list[JudgeMetric] | None,
    _option("Only this judged metric (repeatable; each costs judge calls).", "--judge-metric"),
]
Replay = Annotated[
    Path | None,
    _option(
        "Answer from this --record run's completions.jsonl: no LLM server, no judge; a request "
        "not recorded stops the run (exit 2). With --record: ask the LLM only what it lacks."
    ),
]
Record = Annotated[bool, _option("Keep LLM requests and completions (--replay).", "--record")]
AppUrl = Annotated[str, _option("A running Scholia (loopback), e.g. http://127.0.0.1:8000.")]


@eval_app.command("run")
def run(
    suite: Annotated[str, typer.Argument(help="A suite file (JSON Lines) or name (dev).")],
    out: Annotated[Path | None, _option("Run folder; a run there is resumed.")] = None,
    limit: Annotated[int | None, _option("Only the first N questions.", min=1)] = None,
    stratify: Annotated[bool, _option("With --limit: round-robin across types.")] = False,
    types: Annotated[list[str] | None, _option("Only this type (repeatable).", "--type")] = None,
    mode: Annotated[Mode, _option("Retrieval mode; all: dense, bm25 and hybrid.")] = Mode.hybrid,
    no_llm: Annotated[bool, _option("Retrieval metrics only.", "--no-llm")] = False,
    top_k: Annotated[int, _option("Sources per /ask.", min=1, max=20)] = 5,
    check: Annotated[bool, _option("Exit 1 when a metric misses a threshold.", "--check")] = False,
    thresholds: Thresholds = None,
    restart: Annotated[bool, _option("Discard a previous run in --out.")] = False,
    progress: Progress = None,
    no_judge: Annotated[bool, _option("Score without the LLM judge.", "--no-judge")] = False,
    judge_url: Annotated[str | None, _option("Judge server (…/v1); default: the LLM.")] = None,
    judge_model: Annotated[str | None, _option("Judge model; default: the LLM's.")] = None,
    judge_max_tokens: Annotated[int, _option("Token limit of one judge reply.", min=64)] = 512,
    judge_timeout: Annotated[float, _option("Seconds one judge call may take.", min=1)] = 300.0,
    judge_metrics: JudgeMetrics = None,
    record: Record = False,
    replay: Replay = None,
    max_misses: Annotated[int, _option("With --replay: unrecorded requests to skip.", min=0)] = 0,
) -> None:
    """Evaluate a suite: retrieval, answers, RAGAS scores; results.jsonl, summary.json, report.md."""
    from eval.compare import ThresholdsError, load_thresholds
    from eval.replay import ReplayError
    from eval.runner import MODES, LLMDownError, RunConfigError, RunOptions, run_suite
    from eval.suite import SuiteError, load_suite, select

    settings = Settings()
    try:
        loaded = load_suite(suite)
        bounds = load_thresholds(thresholds) if check or thresholds else None
    except (SuiteError, ThresholdsError) as error:
        _fail(str(error))
    questions = select(loaded.questions, limit, types, stratify)
    if not questions:
        _fail(f"no question of type {', '.join(types or [])} in {loaded.path}")
    _check_flags(no_llm, record, replay, judge_url or judge_model)
    no_judge = no_judge or replay is not None
    limits = {"max_tokens": judge_max_tokens, "timeout_s": judge_timeout, "metrics": judge_metrics}
    judge = None if no_llm or no_judge else _judge(settings, judge_url, judge_model, **limits)
    modes = list(MODES) if mode == "all" else [mode.value]
    answer_mode = settings.retrieval.mode if mode == "all" else mode.value
    options = RunOptions(modes, answer_mode, not no_llm, judge, top_k, progress, record, replay)
    options.max_replay_misses = max_misses
    kind = "retrieval" if no_llm else "replay" if replay else "answers"
    out = out or _default_out(settings, f"{loaded.name}-{mode.value}-{kind}")
    _log(f"run folder: {out}  (resume: the same command with --out {out})")
    try:
        summary = asyncio.run(run_suite(loaded, questions, settings, out, options, restart=restart))
    except (RunConfigError, SuiteError, ReplayError) as error:
        _fail(str(error))
    except LLMDownError as error:
        _fail(str(error), code=3)
    typer.echo(render("headline.txt.j2", s=summary, judge_metrics=JUDGE_METRICS), nl=False)
    typer.echo(f"report: {out / 'report.md'}")
    if bounds is not None:
        _gate(summary["metrics"], bounds, exit_on_failure=check)


def _check_flags(no_llm: bool, record: bool, replay: Path | None, judge: str | None) -> None:
    if no_llm and (record or replay):
        _fail("--record and --replay need the LLM's answers: drop --no-llm")
    if replay is not None and judge:
        _log("note: --replay runs without the LLM judge (--no-judge)")


def _judge(settings: Settings, url: str | None, model: str | None, **limits: Any) -> Any:
    from assistant.api.services import llm_base_url
    from ingest.embed import packaged_model_path

    limits["metrics"] = tuple(metric.value for metric in limits["metrics"] or ())
    url, model = url or llm_base_url(settings), model or settings.llm.model
    return JudgeConfig(url, model, settings.embedding.model_path or packaged_model_path(), **limits)


def _gate(metrics: dict[str, float], bounds: dict, exit_on_failure: bool) -> None:
    from eval.compare import gate

    passed, report = gate(metrics, bounds)
    typer.echo(report)
    if exit_on_failure and not passed:
        raise typer.Exit(1)


def _default_out(settings: Settings, name: str) -> Path:
    return settings.data_dir / "eval-runs" / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _integers(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        _fail(f"{option} must be comma-separated integers, got {text!r}")


@eval_app.command("check")
def check_run(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.")],
    thresholds: Thresholds = None,
) -> None:
    """Check a finished run against the thresholds (exit 1 on failure)."""
    from eval.compare import RunNotFoundError, ThresholdsError, load_run, load_thresholds

    try:
        summary, bounds = load_run(run_dir)[0], load_thresholds(thresholds)
    except (RunNotFoundError, ThresholdsError) as error:
        _fail(str(error))
    _gate(summary["metrics"], bounds, exit_on_failure=True)


@eval_app.command("compare")
def compare(
    run_a: Annotated[Path, typer.Argument(help="The baseline run folder.")],
    run_b: Annotated[Path, typer.Argument(help="The run to compare with it.")],
    out: Annotated[Path | None, _option("Also write the comparison (Markdown) here.")] = None,
    all_metrics: Annotated[bool, _option("Per-type metrics too.", "--all-metrics")] = False,
) -> None:
    """What improved and what regressed from RUN_A to RUN_B, question by question."""
    from eval.compare import RunNotFoundError, compare_runs, render_comparison

    try:
        text = render_comparison(compare_runs(run_a, run_b), all_metrics=all_metrics)
    except RunNotFoundError as error:
        _fail(str(error))
    typer.echo(text)
    if out is not None:
        write_outputs(out.parent, {out.name: text})


def _benchmark(name: str, out: Path | None, measure: Callable[[Settings, Path], Any]) -> Any:
    """Run a benchmark into `out` (default: a new folder), print its NAME.md; its report."""
    settings = Settings()
    out = out or _default_out(settings, name)
    try:
        report = measure(settings, out)
    except (ValueError, RuntimeError) as error:
        _fail(str(error))
    typer.echo((out / f"{name}.md").read_text(encoding="utf-8"))
    return report


@eval_app.command("perf")
def perf(
    out: Out = None,
    sizes: Annotated[str, _option("Ingest benchmark sizes (papers), comma-separated.")] = "50",
    queries: Annotated[int, _option("/search requests to time.", min=1)] = 30,
    asks: Annotated[int, _option("/ask requests to time (0: skip; each generates).", min=0)] = 3,
    skip_ingest: Annotated[
        bool, _option("Leave out the ingest benchmark.", "--skip-ingest")
    ] = False,
) -> None:
    """Performance: ingest throughput, /search and /ask latency, each beside its raw baseline."""
    from eval.perf import run_perf

    size_list = [] if skip_ingest else _integers(sizes, "--sizes")
    measure = partial(run_perf, sizes=size_list, queries=queries, asks=asks, log=_log)
    raise typer.Exit(int(bool(_benchmark("perf", out, measure)["errors"])))


@eval_app.command("concurrency")
def concurrency(
    app_url: AppUrl,
    llm_url: Annotated[str, _option("Its LLM server (loopback), e.g. http://127.0.0.1:8100/v1.")],
    levels: Annotated[str, _option("Concurrent clients per level, comma-separated.")] = "1,4,16",
    out: Out = None,
    questions: Annotated[int, _option("The first N answerable dev questions.", min=1)] = 8,
    requests: Annotated[
        int | None, _option("Requests per level (default 2 × level, at least 4).", min=1)
    ] = None,
    model: Annotated[str | None, _option("Model name (default: the configured one).")] = None,
    time_cap: Annotated[float, _option("Seconds for the whole run.", min=1)] = 600.0,
) -> None:
    """/ask throughput and p50/p95 latency at each concurrency, beside the raw LLM on the same prompts."""
    from eval.bench_load import Concurrency

    given = (app_url, llm_url, _integers(levels, "--levels"), questions, model)
    limits: dict[str, Any] = {"requests_per_level": requests, "time_cap_s": time_cap, "log": _log}
    bench = partial(Concurrency, *given, **limits)
    _benchmark("concurrency", out, lambda settings, out: bench(settings=settings).run(out))


@eval_app.command("load")
def load(
    url: AppUrl,
    clients: Annotated[int, _option("Concurrent clients.", min=3)] = 32,
    duration: Annotated[
        float, _option("Seconds of load (then in-flight ones finish).", min=1)
    ] = 60.0,
    warmup: Annotated[float, _option("The first seconds, marked as warm-up.", min=0)] = 15.0,
    pid: Annotated[
        int | None, _option("The app's process, for its RSS (default: on the port).")
    ] = None,
    out: Out = None,
    progress: Progress = None,
) -> None:
    """Concurrent clients mixing /ask, /search and bad requests: throughput, p50/p95/p99 per
    route, statuses, app RSS over time. Exit 1 on an unexpected answer (a 5xx other than
    503/504, a bad request not refused as it should be, a transport error)."""
    from eval.bench_load import LoadTest

    test = partial(LoadTest, url, clients, duration, warmup, pid, progress=progress, log=_log)
    report = _benchmark("load", out, lambda settings, out: test(settings=settings).run(out))
    raise typer.Exit(int(bool(report["unexpected"])))
