"""`scholia eval run`: every question of a suite through retrieval (and /ask), scored. Each is
appended to results.jsonl when done, so a killed run resumes where it stopped; the summary, report
and plots are rebuilt from all of it at the end of every run."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from assistant.llm import LLM, LLMUnavailableError, OpenAICompatibleLLM
from assistant.pipeline import AnswerUnavailableError, clean_question
from assistant.schemas import AskRequest
from eval.compare import RESULTS, load_results
from eval.harness import append_jsonl, check_index, now, progress, write_outputs
from eval.metrics import RETRIEVAL_DEPTH, key_string_score, relevant_ranks, retrieval_scores
from eval.ragas_eval import Judge, JudgeConfig, NonLLMScorer
from eval.replay import COMPLETIONS, CompletionNotRecordedError, ReplayLLM, recording_path
from eval.report import summarize, write_report
from eval.suite import Question, Suite
from ingest.embed import Embedder
from ingest.parse import normalize_title
from scholia.settings import Settings

MODES = ("dense", "bm25", "hybrid")
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
    max_replay_misses: int = 0  # questions a replay may skip (a prompt a CPU rounds otherwise)

    def identity(self) -> dict[str, Any]:
        """What must match for a run to be resumed into the same folder."""
        identity: dict[str, Any] = {"modes": sorted(self.modes)}
        identity["answer_mode"] = self.answer_mode if self.answers else None
        identity |= {"answers": self.answers, "judge": bool(self.judge), "top_k": self.top_k}
        # Only when used, so that folders made before recording existed still resume.
        if self.record or self.replay is not None:
            identity["completions"] = "replay" if self.replay is not None else "record"
        return identity


class Run:
    """One run of `questions` into `out_dir`: what it answers with, and how far it got."""

    def __init__(
        self, suite: Suite, settings: Settings, out_dir: Path, options: RunOptions
    ) -> None:
        self.suite, self.settings, self.out_dir, self.options = suite, settings, out_dir, options
        self.say: Callable[[str], None] = partial(print, file=sys.stderr)
        self.replay: ReplayLLM | None = None
        self.scorer: NonLLMScorer | None = None
        self.judge: Judge | None = None
        self.missed = 0  # questions a replay skipped

    def prepare(self, restart: bool) -> None:
        """The run folder: emptied with `restart`, refused when it holds another kind of run."""
        options, out_dir, suite = self.options, self.out_dir, self.suite
        if options.replay is not None:
            if options.judge is not None or not options.answers:
                raise RunConfigError("A replay answers the questions, without the LLM judge.")
            if recording_path(options.replay).resolve() == (out_dir / COMPLETIONS).resolve():
                raise RunConfigError(f"{out_dir} is the recording replayed: use another --out.")
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in (RESULTS, "run.json", "summary.json", COMPLETIONS) if restart else ():
            (out_dir / name).unlink(missing_ok=True)
        identity = {"suite": str(suite.path.resolve()), **options.identity()}
        digest = hashlib.sha256(suite.path.read_bytes()).hexdigest()
        if (out_dir / "run.json").is_file():
            previous = json.loads((out_dir / "run.json").read_text(encoding="utf-8"))
            if (old := previous.get("identity", {})) != identity:
                keys = [k for k in {**identity, **old} if old.get(k) != identity.get(k)]
                differences = ", ".join(f"{k}: {old.get(k)!r} → {identity.get(k)!r}" for k in keys)
                raise RunConfigError(
                    f"{out_dir} holds a run made with other settings ({differences}). "
                    "Use another --out, or --restart to discard it."
                )
            if previous.get("suite_sha256") != digest:
                self.say(f"note: {suite.path} changed since this run started")
        judge, replay = options.judge, options.replay
        meta: dict[str, Any] = {"identity": identity, "suite_sha256": digest}
        meta |= {"judge_url": judge and judge.url, "judge_model": judge and judge.model}
        meta |= {"replay_of": replay and str(replay), "updated": now()}
        write_outputs(out_dir, {"run.json": meta})

    async def start(self, todo: list[Question], llm: LLM | None, embedder: Embedder | None) -> None:
        """The services for the questions left: the LLM checked, the embedding model loaded."""
        from assistant.api.services import build_services, llm_base_url

        settings, options, answer_with = self.settings, self.options, llm
        if options.record:  # replayed where the recording has the request, else asked of the LLM
            live = llm or OpenAICompatibleLLM(llm_base_url(settings), settings.llm)
            answer_with = ReplayLLM(options.replay, settings.llm, live, self.out_dir / COMPLETIONS)
        elif options.replay is not None:  # every answer from the recording, no LLM
            self.replay = answer_with = ReplayLLM(options.replay, settings.llm)
        retrieval = settings.retrieval.model_copy(update={"mode": options.answer_mode})
        answering = settings.model_copy(update={"retrieval": retrieval})
        self.services = build_services(answering, llm=answer_with, embedder=embedder)
        check_index(self.services, settings, RunConfigError)
        self.catalogue: dict[str, str] = {}  # normalised title → paper id
        for paper in self.services.store.paper_entries():
            self.catalogue.setdefault(normalize_title(paper.title), paper.id)
        if options.answers:
            self.scorer = NonLLMScorer()
            self.judge = Judge(options.judge) if options.judge is not None else None
        unknown = {t for q in todo for t in self.gold(q)[1]}
        for title in sorted(unknown, key=str.casefold):
            self.say(f"warning: gold title not in the index: {title}")
        if options.answers and not await self.services.llm.ping():
            where = f"({self.services.llm.model})" if llm else f"at {llm_base_url(settings)}"
            raise LLMDownError(
                f"The LLM {where} does not answer; start it (or set SCHOLIA_LLM_URL), "
                "or run with --no-llm."
            )
        self.services.assistant.retriever.search("warm-up query", 1)  # load the model first

    def gold(self, question: Question) -> tuple[list[str], list[str]]:
        """Gold paper ids (titles looked up in the index) and the gold titles the index lacks."""
        found = [(t, self.catalogue.get(normalize_title(t))) for t in question.gold_titles]
        ids = dict.fromkeys([*question.gold_ids, *(i for _, i in found if i is not None)])
        return list(ids), [title for title, paper_id in found if paper_id is None]

    async def evaluate(self, question: Question) -> dict[str, Any]:
        gold_ids, missing = self.gold(question)
        record: dict[str, Any] = {"id": question.id, "type": question.type}
        record |= {"question": question.question, "tags": list(question.tags)}
        record |= {"answerable": question.answerable, "gold_titles": list(question.gold_titles)}
        record |= {"gold_ids": gold_ids, "gold_missing_from_index": missing, "retrieval": {}}
        record |= {"timings": {"retrieve_ms": {}}, "complete": True}
        query, gold_count = clean_question(question.question), len(gold_ids) + len(missing)
        for mode in self.options.modes:
            tick = time.perf_counter()
            papers = self.services.assistant.retriever.search(query, RETRIEVAL_DEPTH, mode=mode)
            record["timings"]["retrieve_ms"][mode] = _ms(tick)
            ids, titles = [p.id for p in papers], [p.title for p in papers]
            ranks = relevant_ranks(ids, titles, gold_ids, missing)
            best_dense = round(max((p.dense_score for p in papers), default=0.0), 4)
            scores = retrieval_scores(ranks, gold_count) if gold_count else None
            record["retrieval"][mode] = {"ids": ids, "titles": titles, "relevant_ranks": ranks}
            record["retrieval"][mode] |= {"best_dense": best_dense, "scores": scores}
        if self.options.answers:
            await self.answer(question, record)
        return record

    async def answer(self, question: Question, record: dict[str, Any]) -> None:
        from ragas.dataset_schema import SingleTurnSample

        request = AskRequest(question=question.question, top_k=self.options.top_k)
        tick = time.perf_counter()
        try:
            response = await self.services.assistant.ask(request)
        except AnswerUnavailableError as error:
            unavailable = isinstance(error.error, LLMUnavailableError)
            record["answer"] = {"text": None, "error": str(error), "unavailable": unavailable}
            record |= {"complete": False, "scores": {}}  # retried when the run is resumed
            return
        except Exception as error:  # one bad question must not end a long run
            record["answer"] = {"text": None, "error": f"{type(error).__name__}: {error}"}
            record["scores"] = {}
            return
        record["timings"] |= {"ask_ms": _ms(tick), "ask": response.timings_ms.model_dump()}
        gold_ids, missing = record["gold_ids"], record["gold_missing_from_index"]
        sources = response.sources
        ids, titles = [s.id for s in sources], [s.title for s in sources]
        kept: dict[str, Any] = {"sources": {"__all__": {"rank", "id", "title", "cited"}}}
        kept |= dict.fromkeys(("declined", "citations", "unsupported", "usage", "model"), True)
        ranks = relevant_ranks(ids, titles, gold_ids, missing)
        record["answer"] = {"text": response.answer, **response.model_dump(include=kept)}
        record["answer"] |= {"error": None, "relevant_ranks": ranks}
        sample = SingleTurnSample(
            user_input=question.question,
            response=response.answer,
            reference=question.reference,
            retrieved_contexts=[s.text for s in sources],
            retrieved_context_ids=ids,
            reference_context_ids=gold_ids + [f"title:{normalize_title(t)}" for t in missing],
        )
        record["scores"] = await self.score(question, record, sample, response.declined)

    async def score(
        self, question: Question, record: dict[str, Any], sample: Any, declined: bool
    ) -> dict[str, float | None]:
        """Key strings (0 for a declined answer), the decline decision, RAGAS's scores."""
        answer, answerable = "" if declined else sample.response, question.answerable
        key_string = key_string_score(answer, question.key_strings)
        scores: dict[str, float | None] = {"key_string": key_string, "declined": float(declined)}
        scores["correct_decline"] = float(declined != answerable)
        if self.scorer is not None:
            tick = time.perf_counter()
            scores |= await self.scorer.score(sample, answerable)
            record["timings"]["ragas_ms"] = _ms(tick)
        if self.judge is not None:
            outcome = await self.judge.judge(sample, answerable, declined)
            scores |= outcome.scores
            record |= {"judge_errors": outcome.errors, "judged": sorted(outcome.scores)}
            record["timings"]["judge_s"] = outcome.seconds
            if outcome.unavailable:  # judged again when the run is resumed
                record |= {"judge_unavailable": True, "complete": False}
        return scores

    async def evaluate_all(self, todo: list[Question], total: int) -> None:
        """Evaluate and append each question; stop when the LLM is down or a replay misses."""
        name, options = self.suite.name, self.options
        done, down, started = total - len(todo), 0, time.perf_counter()
        step = max(1, min(10, len(todo) // 10))  # log lines when there is no bar
        with progress(options.progress, total=total, initial=done, desc=name, unit="q") as bar:
            for index, question in enumerate(todo, start=1):
                record = await self.evaluate(question)
                bar.update(1)
                if self.skipped(question):
                    continue
                append_jsonl(self.out_dir / RESULTS, record | {"evaluated_at": now()})
                if bar.disable and (index % step == 0 or index == len(todo)):
                    elapsed = time.perf_counter() - started
                    eta = f"ETA {elapsed / index * (len(todo) - index):.0f} s"
                    self.say(f"{name}: {done + index}/{total} questions, {elapsed:.0f} s, {eta}")
                unavailable = record.get("answer", {}).get("unavailable")
                down = down + 1 if unavailable or record.get("judge_unavailable") else 0
                if down >= MAX_LLM_DOWN:
                    raise LLMDownError(
                        f"The LLM or judge was unreachable on {down} questions in a row; "
                        f"{self.out_dir} keeps what is done; run the same command again to resume."
                    )

    def skipped(self, question: Question) -> bool:
        """Whether a replay missed a request of this question (and may skip it)."""
        if self.replay is None or not self.replay.misses:
            return False
        miss = f"question {question.id}: {self.replay.misses[0]}"
        self.replay.misses.clear()
        self.missed += 1
        if self.missed > self.options.max_replay_misses:
            raise CompletionNotRecordedError(
                f"{miss}; the recording does not match this code, prompt or settings: "
                "record it again with --record."
            )
        self.say(f"skipped {miss} ({self.missed} of at most {self.options.max_replay_misses})")
        return True


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
    run = Run(suite, settings, out_dir, options)
    run.say = log or run.say
    run.prepare(restart)
    done = {qid for qid, rec in load_results(out_dir).items() if rec.get("complete", True)}
    todo = [q for q in questions if q.id not in done]
    if done:
        run.say(f"resuming {out_dir}: {len(questions) - len(todo)} of {len(questions)} done")
    started = time.perf_counter()
    if todo:
        await run.start(todo, llm, embedder)
        await run.evaluate_all(todo, len(questions))
    records = load_results(out_dir)
    ordered = [records[q.id] for q in questions if q.id in records]
    seconds = round(time.perf_counter() - started, 2)
    summary = summarize(ordered, suite, asdict(options), seconds, settings)
    write_report(out_dir, summary, ordered)
    return summary


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)
