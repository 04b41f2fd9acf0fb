from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from assistant.llm import ChatMessage, Completion, LLMUnavailableError
from eval.ragas_eval import JUDGE_METRICS, JudgeConfig
from eval.runner import (
    RESULTS,
    LLMDownError,
    RunConfigError,
    RunOptions,
    load_results,
    run_suite,
)
from eval.suite import Question, Suite, load_suite, select
from ingest.embed import Embedder, packaged_model_path
from scholia.settings import Settings
from tests.eval.fake_openai import fake_openai
from tests.fakes import FakeLLM


@pytest.fixture(scope="module")
def dev() -> Suite:
    return load_suite("dev")


@pytest.fixture(scope="module")
def five(dev: Suite) -> list[Question]:
    """One question of each type."""
    return select(dev.questions, 5, stratify=True)


def run(
    suite: Suite,
    questions: list[Question],
    settings: Settings,
    out: Path,
    options: RunOptions,
    **kwargs: Any,
) -> dict[str, Any]:
    return asyncio.run(
        run_suite(suite, questions, settings, out, options, log=lambda _: None, **kwargs)
    )


def lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / RESULTS).read_text().splitlines()]


def test_no_llm_all_modes(
    dev: Suite, five: list[Question], indexed_settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    options = RunOptions(modes=["dense", "bm25", "hybrid"], answers=False, progress=False)
    summary = run(dev, five, indexed_settings, out, options, embedder=embedder)

    records = lines(out)
    assert [r["id"] for r in records] == [q.id for q in five]
    first = records[0]
    assert set(first["retrieval"]) == {"dense", "bm25", "hybrid"}
    assert len(first["retrieval"]["hybrid"]["ids"]) == 10
    assert first["gold_ids"] and not first["gold_missing_from_index"]
    assert "answer" not in first
    unanswerable = next(r for r in records if r["type"] == "unanswerable")
    assert unanswerable["retrieval"]["hybrid"]["scores"] is None

    assert summary["answers"] is None and summary["judge"] is None
    for mode in ("dense", "bm25", "hybrid"):
        block = summary["retrieval"][mode]["all"]
        assert block["n"] == 4  # the unanswerable question has no gold paper
        assert 0 <= block["hit@1"] <= block["hit@5"] <= 1
        assert summary["metrics"][f"retrieval.{mode}.mrr"] == pytest.approx(block["mrr"], abs=1e-6)
    assert "retrieval.hybrid.fact.hit@1" in summary["metrics"]
    assert json.loads((out / "summary.json").read_text())["metrics"] == summary["metrics"]
    report = re.sub(" +", " ", (out / "report.md").read_text())  # tables are padded
    assert "| dense | 4 |" in report and "### bm25: all metrics by type" in report
    for plot in ("per_type.png", "scores.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"


def test_resume_skips_done_questions_and_repairs_a_torn_line(
    dev: Suite, five: list[Question], indexed_settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    options = RunOptions(answers=False, progress=False)
    run(dev, five[:2], indexed_settings, out, options, embedder=embedder)
    with (out / RESULTS).open("a") as handle:
        handle.write('{"id": "q0')  # a run killed in the middle of a write
    summary = run(dev, five, indexed_settings, out, options, embedder=embedder)
    records = lines(out)
    assert [r["id"] for r in records] == [q.id for q in five]  # each question exactly once
    assert summary["suite"]["evaluated"] == 5

    before = (out / RESULTS).read_text()
    run(dev, five, indexed_settings, out, options, embedder=embedder)  # all done: nothing new
    assert (out / RESULTS).read_text() == before

    with pytest.raises(RunConfigError, match="other settings"):
        run(dev, five, indexed_settings, out, RunOptions(modes=["dense"], answers=False))
    run(
        dev,
        five[:1],
        indexed_settings,
        out,
        RunOptions(modes=["dense"], answers=False, progress=False),
        embedder=embedder,
        restart=True,
    )
    assert len(lines(out)) == 1


def test_answers_with_fake_llm(
    dev: Suite, five: list[Question], indexed_settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    options = RunOptions(answers=True, progress=False)
    summary = run(dev, five, indexed_settings, out, options, llm=FakeLLM(), embedder=embedder)
    records = {r["id"]: r for r in lines(out)}
    for record in records.values():
        answer = record["answer"]
        assert answer["error"] is None and answer["text"]
        assert set(record["scores"]) >= {
            "key_string",
            "declined",
            "id_context_precision",
            "id_context_recall",
            "rouge_l",
            "chrf",
        }
        assert "ask_ms" in record["timings"] and "ragas_ms" in record["timings"]
    unanswerable = next(r for r in records.values() if r["type"] == "unanswerable")
    assert unanswerable["scores"]["key_string"] is None
    assert unanswerable["scores"]["id_context_recall"] is None
    answered = [r for r in records.values() if r["answerable"] and not r["answer"]["declined"]]
    assert answered, "the fake LLM answers some questions"
    assert all(r["scores"]["rouge_l"] is not None for r in answered)

    block = summary["answers"]["all"]
    assert block["n"] == 5 and block["errors"] == 0
    assert block["n_unanswerable"] == 1 and block["n_answerable"] == 4
    assert block["key_string_accuracy"] is not None
    assert 0 <= block["wrong_decline_rate"] <= 1
    assert block["decline_rate_unanswerable"] in (0.0, 1.0)
    assert "## Answers" in (out / "report.md").read_text()


def test_declined_answer_scores_zero_key_strings(
    dev: Suite, indexed_settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    question = next(q for q in dev.questions if q.type == "which_paper")
    out = tmp_path / "run"
    llm = FakeLLM(reply="The collection does not say.")
    # No quote may overrule the refusal: this is about how a refusal is scored.
    answer = indexed_settings.answer.model_copy(update={"extractive_fallback": False})
    run(
        dev,
        [question],
        indexed_settings.model_copy(update={"answer": answer}),
        out,
        RunOptions(progress=False),
        llm=llm,
        embedder=embedder,
    )
    record = lines(out)[0]
    assert record["answer"]["declined"] is True
    # The decline lists the closest titles, which contain the key string; it still scores 0.
    assert record["scores"]["key_string"] == 0.0
    assert record["scores"]["declined"] == 1.0 and record["scores"]["correct_decline"] == 0.0


def test_malformed_judge_json_gives_missing_scores_not_a_crash(
    dev: Suite, five: list[Question], indexed_settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    question = next(q for q in five if q.type == "fact")
    out = tmp_path / "run"
    with fake_openai('{"statements": [unclosed, this is not JSON') as judge_server:
        judge = JudgeConfig(
            url=judge_server.url,
            model="fake-judge",
            embedding_model=packaged_model_path(),
            max_tokens=64,
            timeout_s=20,
            retries=1,
        )
        options = RunOptions(answers=True, judge=judge, progress=False)
        summary = run(
            dev, [question], indexed_settings, out, options, llm=FakeLLM(), embedder=embedder
        )
        assert judge_server.requests, "the judge was asked"
        assert judge_server.requests[0]["response_format"] == {"type": "json_object"}
    record = lines(out)[0]
    assert not record["answer"]["declined"]
    assert set(record["judged"]) == set(JUDGE_METRICS)
    for metric in JUDGE_METRICS:
        assert record["scores"][metric] is None
        assert record["judge_errors"][metric]
    judged = summary["judge"]
    assert judged["attempted"] == len(JUDGE_METRICS) == judged["missing"]
    assert summary["metrics"]["judge.missing"] == len(JUDGE_METRICS)
    assert all(judged["all"][m] is None for m in JUDGE_METRICS)
    report = (out / "report.md").read_text()
    assert "5 of 5 judge scores missing" in report


class FlakyLLM(FakeLLM):
    """Answers the first question, then the server goes away."""

    def __init__(self) -> None:
        super().__init__()
        self.answers_left = 1

    async def complete(
        self, messages: list[ChatMessage], max_tokens: int, schema: Any = None
    ) -> Completion:
        if self.answers_left <= 0:
            raise LLMUnavailableError("connection refused")
        self.answers_left -= 1
        return await super().complete(messages, max_tokens, schema)


def test_llm_down_stops_the_run_and_resume_redoes_failed_questions(
    dev: Suite, indexed_settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    questions = [q for q in dev.questions if q.type == "fact"][:5]
    out = tmp_path / "run"
    options = RunOptions(progress=False)
    with pytest.raises(LLMDownError, match="in a row"):
        run(dev, questions, indexed_settings, out, options, llm=FlakyLLM(), embedder=embedder)
    records = load_results(out)
    assert len(records) == 4  # one answered, three failed, then it stopped
    assert sum(not r["complete"] for r in records.values()) == 3

    summary = run(dev, questions, indexed_settings, out, options, llm=FakeLLM(), embedder=embedder)
    assert all(r["complete"] for r in load_results(out).values())
    assert summary["answers"]["all"]["errors"] == 0 and summary["suite"]["evaluated"] == 5

    down = FakeLLM()
    down.down = True
    with pytest.raises(LLMDownError, match="does not answer"):
        run(
            dev,
            questions,
            indexed_settings,
            tmp_path / "other",
            options,
            llm=down,
            embedder=embedder,
        )
