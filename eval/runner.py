"""`scholia eval run`: every question of a suite through retrieval (and /ask), scored, resumable.

Each finished question is appended to `results.jsonl` at once, so a killed run continues where it
stopped when it is started again with the same output folder. `summary.json` and `report.md`
are rebuilt from all of `results.jsonl` at the end of every run. With `record`, every LLM
completion is kept in `completions.jsonl`; with `replay`, a run answers from such a file alone
(see eval/replay.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from assistant.llm import LLM, LLMUnavailableError
from assistant.pipeline import AnswerUnavailableError, clean_question
from assistant.schemas import AskRequest
from eval.metrics import RETRIEVAL_DEPTH, key_string_score, relevant_ranks, retrieval_scores
from eval.ragas_eval import Judge, JudgeConfig, NonLLMScorer, Sample
from eval.replay import (
    COMPLETIONS,
    CompletionNotRecordedError,
    ReplayLLM,
    recording_path,
    run_llm,
)
from eval.report import summarize, write_report
from eval.suite import Question, Suite, normalize_title
from ingest.embed import Embedder
from scholia.settings import Settings

MODES = ("dense", "bm25", "hybrid")
RESULTS = "results.jsonl"
META = "run.json"
SUMMARY = "summary.json"
# Consecutive "LLM unreachable" answers after which a run stops (and can be resumed later).
MAX_LLM_DOWN = 3


class RunConfigError(RuntimeError):
    """The output folder holds a run made with other settings."""


class LLMDownError(RuntimeError):
    """The LLM cannot be reached; the questions answered so far are kept."""


@dataclass
class RunOptions:
    modes: list[str] = field(default_factory=lambda: ["hybrid"])
    answer_mode: str = "hybrid"
    answers: bool = True
    judge: JudgeConfig | None = None
    top_k: int = 5
    progress: bool | None = None  # None: a bar when stderr is a terminal
    record: bool = False  # keep every LLM completion in completions.jsonl
    replay: Path | None = None  # answer from this run folder's completions.jsonl, no LLM server
    # questions a replay may skip (a prompt that differs by a CPU's rounding)
    max_replay_misses: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The options as summary.json keeps them (no API key)."""
        data = asdict(self)
        data["replay"] = str(self.replay) if self.replay is not None else None
        if self.judge is not None:
            data["judge"] = {
                **asdict(self.judge),
                "embedding_model": str(self.judge.embedding_model),
            }
            data["judge"].pop("api_key", None)
        return data

    def identity(self) -> dict[str, Any]:
        """What must match for a run to be resumed into the same folder."""
        identity: dict[str, Any] = {
            "modes": sorted(self.modes),
            "answer_mode": self.answer_mode if self.answers else None,
            "answers": self.answers,
            "judge": bool(self.judge),
            "top_k": self.top_k,
        }
        # Only when used, so that folders made before recording existed still resume.
        if self.record or self.replay is not None:
            identity["completions"] = "replay" if self.replay is not None else "record"
        return identity


@dataclass
class RunContext:
    suite: Suite
    settings: Settings
    options: RunOptions
    services: Any
    catalogue: dict[str, str]  # normalised title → paper id
    scorer: NonLLMScorer | None = None
    judge: Judge | None = None
    replay: ReplayLLM | None = None


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_results(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The latest record of every question in results.jsonl; a torn last line is dropped."""
    path = out_dir / RESULTS
    if not path.is_file():
        return {}
    records: dict[str, dict[str, Any]] = {}
    good_bytes = 0
    with path.open("rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                break  # a run killed mid-write; everything after is rewritten
            if not raw.endswith(b"\n"):
                break
            records[str(record["id"])] = record
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        with path.open("r+b") as handle:
            handle.truncate(good_bytes)
    return records


def append_result(out_dir: Path, record: dict[str, Any]) -> None:
    with (out_dir / RESULTS).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def check_completions(out_dir: Path, options: RunOptions) -> None:
    if options.replay is None:
        return
    if options.judge is not None or not options.answers:
        raise RunConfigError("A replay answers the questions, without the LLM judge (--no-judge).")
    if recording_path(options.replay).resolve() == (out_dir / COMPLETIONS).resolve():
        raise RunConfigError(f"{out_dir} is the recording being replayed: use another --out.")


def prepare_out_dir(out_dir: Path, suite: Suite, options: RunOptions, restart: bool) -> None:
    check_completions(out_dir, options)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path = out_dir / META
    identity = {"suite": str(suite.path.resolve()), **options.identity()}
    if restart:
        for name in (RESULTS, META, SUMMARY, COMPLETIONS):
            (out_dir / name).unlink(missing_ok=True)
    if meta_path.is_file():
        previous = json.loads(meta_path.read_text())
        old = previous.get("identity", {})
        if old != identity:
            differences = ", ".join(
                f"{key}: {old.get(key)!r} → {identity.get(key)!r}"
                for key in dict.fromkeys([*identity, *old])
                if old.get(key) != identity.get(key)
            )
            raise RunConfigError(
                f"{out_dir} holds a run made with other settings ({differences}). "
                "Use another --out, or --restart to discard it."
            )
        if previous.get("suite_sha256") != sha256_of(suite.path):
            print(
                f"note: {suite.path} changed since this run started; finished questions are kept",
                file=sys.stderr,
            )
    meta = {
        "identity": identity,
        "suite_sha256": sha256_of(suite.path),
        "judge_url": options.judge.url if options.judge else None,
        "judge_model": options.judge.model if options.judge else None,
        "replay_of": str(options.replay) if options.replay is not None else None,
        "updated": _now(),
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")


def title_catalogue(store: Any) -> dict[str, str]:
    catalogue: dict[str, str] = {}
    for _, _, metadata in store.iter_chunks():
        catalogue.setdefault(
            normalize_title(str(metadata.get("title", ""))), str(metadata["paper_id"])
        )
    return catalogue


def resolve_gold(question: Question, catalogue: dict[str, str]) -> tuple[list[str], list[str]]:
    """Gold paper ids (titles looked up in the index) and the gold titles the index lacks."""
    ids = list(dict.fromkeys(question.gold_ids))
    missing: list[str] = []
    for title in question.gold_titles:
        paper_id = catalogue.get(normalize_title(title))
        if paper_id is None:
            missing.append(title)
        elif paper_id not in ids:
            ids.append(paper_id)
    return ids, missing


async def evaluate_question(question: Question, ctx: RunContext) -> dict[str, Any]:
    gold_ids, missing = resolve_gold(question, ctx.catalogue)
    gold_count = len(gold_ids) + len(missing)
    record: dict[str, Any] = {
        "id": question.id,
        "type": question.type,
        "question": question.question,
        "tags": list(question.tags),
        "answerable": question.answerable,
        "gold_titles": list(question.gold_titles),
        "gold_ids": gold_ids,
        "gold_missing_from_index": missing,
        "retrieval": {},
        "timings": {"retrieve_ms": {}},
        "complete": True,
    }
    retriever = ctx.services.assistant.retriever
    query = clean_question(question.question)
    for mode in ctx.options.modes:
        tick = time.perf_counter()
        papers = retriever.search(query, RETRIEVAL_DEPTH, mode=mode)
        elapsed = _ms(tick)
        ids = [paper.id for paper in papers]
        titles = [paper.title for paper in papers]
        ranks = relevant_ranks(ids, titles, gold_ids, missing)
        record["retrieval"][mode] = {
            "ids": ids,
            "titles": titles,
            "relevant_ranks": ranks,
            "best_dense": round(max((p.dense_score for p in papers), default=0.0), 4),
            "scores": retrieval_scores(ranks, gold_count) if gold_count else None,
        }
        record["timings"]["retrieve_ms"][mode] = elapsed

    if ctx.options.answers:
        await _answer(question, ctx, record, gold_ids)
    return record


async def _answer(
    question: Question, ctx: RunContext, record: dict[str, Any], gold_ids: list[str]
) -> None:
    tick = time.perf_counter()
    try:
        response = await ctx.services.assistant.ask(
            AskRequest(question=question.question, top_k=ctx.options.top_k)
        )
    except AnswerUnavailableError as error:
        record["answer"] = {
            "text": None,
            "error": str(error),
            "unavailable": isinstance(error.error, LLMUnavailableError),
        }
        record["complete"] = False  # retried when the run is resumed
        record["scores"] = {}
        return
    except Exception as error:  # one bad question must not end a long run
        record["answer"] = {"text": None, "error": f"{type(error).__name__}: {error}"}
        record["scores"] = {}
        return
    record["timings"]["ask_ms"] = _ms(tick)
    record["timings"]["ask"] = response.timings_ms.model_dump()
    missing = record["gold_missing_from_index"]
    sources = [
        {"rank": s.rank, "id": s.id, "title": s.title, "cited": s.cited} for s in response.sources
    ]
    record["answer"] = {
        "text": response.answer,
        "declined": response.declined,
        "citations": response.citations,
        "sources": sources,
        "unsupported": response.unsupported,
        "usage": response.usage.model_dump(),
        "model": response.model,
        "error": None,
        "relevant_ranks": relevant_ranks(
            [s.id for s in response.sources], [s.title for s in response.sources], gold_ids, missing
        ),
    }
    sample = Sample(
        user_input=question.question,
        response=response.answer,
        reference=question.reference,
        retrieved_contexts=[s.text for s in response.sources],
        retrieved_ids=[s.id for s in response.sources],
        reference_ids=gold_ids + [f"title:{normalize_title(t)}" for t in missing],
        answerable=question.answerable,
        declined=response.declined,
    )
    record["scores"] = await _scores(question, ctx, record, sample)


async def _scores(
    question: Question, ctx: RunContext, record: dict[str, Any], sample: Sample
) -> dict[str, float | None]:
    """Key strings, the decline decision, RAGAS's non-LLM scores and the judge's."""
    keys = question.key_strings
    scores: dict[str, float | None] = {
        "key_string": None
        if not keys
        else 0.0
        if sample.declined
        else key_string_score(sample.response, keys),
        "declined": 1.0 if sample.declined else 0.0,
        "correct_decline": float(sample.declined != question.answerable),
    }
    if ctx.scorer is not None:
        tick = time.perf_counter()
        scores.update(await ctx.scorer.score(sample))
        record["timings"]["ragas_ms"] = _ms(tick)
    if ctx.judge is not None:
        outcome = await ctx.judge.judge(sample)
        scores.update(outcome.scores)
        record["judge_errors"] = outcome.errors
        record["judged"] = sorted(outcome.scores)
        record["timings"]["judge_s"] = outcome.seconds
        if outcome.unavailable:
            record["judge_unavailable"] = True
            record["complete"] = False  # judged again when the run is resumed
    return scores


def build_context(
    suite: Suite,
    settings: Settings,
    options: RunOptions,
    llm: LLM | None = None,
    embedder: Embedder | None = None,
) -> RunContext:
    from assistant.api.services import build_services

    answer_settings = settings.model_copy(
        update={"retrieval": settings.retrieval.model_copy(update={"mode": options.answer_mode})}
    )
    services = build_services(answer_settings, llm=llm, embedder=embedder)
    if services.store.count() == 0:
        raise RunConfigError(
            f"The index in {settings.data_dir} is empty: run `scholia ingest` first."
        )
    ctx = RunContext(suite, settings, options, services, title_catalogue(services.store))
    if options.answers:
        ctx.scorer = NonLLMScorer()
        if options.judge is not None:
            ctx.judge = Judge(options.judge)
    return ctx


async def run_suite(
    suite: Suite,
    questions: list[Question],
    settings: Settings,
    out_dir: Path,
    options: RunOptions,
    *,
    llm: LLM | None = None,
    embedder: Embedder | None = None,
    restart: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    say = log or (lambda message: print(message, file=sys.stderr))
    prepare_out_dir(out_dir, suite, options, restart)
    done = {qid for qid, rec in load_results(out_dir).items() if rec.get("complete", True)}
    todo = [q for q in questions if q.id not in done]
    if done:
        say(f"resuming {out_dir}: {len(questions) - len(todo)} of {len(questions)} questions done")

    started = time.perf_counter()
    if todo:
        ctx = await start_run(suite, todo, settings, out_dir, options, llm, embedder, say)
        await evaluate_all(ctx, todo, len(questions), out_dir, say)

    records = load_results(out_dir)
    ordered = [records[q.id] for q in questions if q.id in records]
    seconds = round(time.perf_counter() - started, 2)
    options_used = options.as_dict()
    summary = summarize(
        ordered, suite=suite, options=options_used, seconds=seconds, settings=settings
    )
    write_report(out_dir, summary, ordered)
    return summary


async def start_run(
    suite: Suite,
    todo: list[Question],
    settings: Settings,
    out_dir: Path,
    options: RunOptions,
    llm: LLM | None,
    embedder: Embedder | None,
    say: Callable[[str], None],
) -> RunContext:
    """The context for the questions left: the LLM checked, the embedding model loaded."""
    from assistant.api.services import llm_base_url

    record_to = out_dir / COMPLETIONS if options.record else None
    run_with = run_llm(llm, settings.llm, llm_base_url(settings), record_to, options.replay)
    ctx = build_context(suite, settings, options, run_with, embedder)
    if isinstance(run_with, ReplayLLM):
        ctx.replay = run_with
    unknown = sorted({t for q in todo for t in resolve_gold(q, ctx.catalogue)[1]}, key=str.casefold)
    for title in unknown:
        say(f"warning: gold title not in the index: {title}")
    if options.answers and not await ctx.services.llm.ping():
        where = f"at {llm_base_url(settings)}" if llm is None else f"({ctx.services.llm.model})"
        raise LLMDownError(
            f"The LLM {where} does not answer; start it (or set SCHOLIA_LLM_URL), "
            "or run with --no-llm."
        )
    ctx.services.assistant.retriever.search("warm-up query", 1)  # load the model first
    return ctx


async def evaluate_all(
    ctx: RunContext, todo: list[Question], total: int, out_dir: Path, say: Callable[[str], None]
) -> None:
    """Evaluate and append each question; stop when the LLM is down or a replay misses."""
    from tqdm import tqdm

    started = time.perf_counter()
    name = ctx.suite.name
    interactive = sys.stderr.isatty() if ctx.options.progress is None else ctx.options.progress
    bar = tqdm(
        total=total,
        initial=total - len(todo),
        desc=name,
        unit="q",
        disable=not interactive,
        dynamic_ncols=True,
    )
    down = 0
    missed: list[str] = []
    step = max(1, min(10, len(todo) // 10))  # log lines when there is no bar
    try:
        for index, question in enumerate(todo, start=1):
            record = await evaluate_question(question, ctx)
            if ctx.replay is not None and ctx.replay.misses:
                miss = f"question {question.id}: {ctx.replay.misses[0]}"
                ctx.replay.misses.clear()
                missed.append(question.id)
                if len(missed) > ctx.options.max_replay_misses:
                    raise CompletionNotRecordedError(
                        f"{miss}; the recording does not match this code, prompt or settings: "
                        "record it again with --record."
                    )
                say(f"skipped {miss} ({len(missed)} of at most {ctx.options.max_replay_misses})")
                bar.update(1)
                continue
            record["evaluated_at"] = _now()
            append_result(out_dir, record)
            bar.update(1)
            if not interactive and (index % step == 0 or index == len(todo)):
                elapsed = time.perf_counter() - started
                eta = elapsed / index * (len(todo) - index)
                say(
                    f"{name}: {total - len(todo) + index}/{total} "
                    f"questions, {elapsed:.0f} s elapsed, ETA {eta:.0f} s"
                )
            unavailable = record.get("answer", {}).get("unavailable", False) or record.get(
                "judge_unavailable", False
            )
            down = down + 1 if unavailable else 0
            if down >= MAX_LLM_DOWN:
                raise LLMDownError(
                    f"The LLM or judge was unreachable on {down} questions in a row; {out_dir} "
                    "keeps what is done; run the same command again to resume."
                )
    finally:
        bar.close()


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
