"""RAGAS metrics, computed by `ragas` itself (0.4.3).

Non-LLM: ID-based context precision/recall (legacy `ragas.metrics` classes: the collections API has
no ID-based metric) and ROUGE-L / chrF (`ragas.metrics.collections`).
LLM-judged: faithfulness, answer relevancy, context precision, context recall and factual
correctness from `ragas.metrics.collections`, with `llm_factory` over an `AsyncOpenAI` client
pointed at any OpenAI-compatible judge and the packaged MiniLM for embeddings.

A judge call that fails (malformed JSON after instructor's retries, a timeout, a server error)
never stops a run: that metric of that sample is missing, and the reason is kept.
"""

from __future__ import annotations

import asyncio
import math
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NON_LLM_METRICS = ("id_context_precision", "id_context_recall", "rouge_l", "chrf")
JUDGE_METRICS = (
    "faithfulness",
    "answer_relevancy",
    "context_precision",
    "context_recall",
    "factual_correctness",
)


@dataclass
class Sample:
    """What one question produced, in the terms RAGAS uses."""

    user_input: str
    response: str
    reference: str
    retrieved_contexts: list[str]
    retrieved_ids: list[str]
    reference_ids: list[str]
    answerable: bool
    declined: bool


@dataclass
class JudgeOutcome:
    scores: dict[str, float | None] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    unavailable: bool = False  # the judge could not be reached: worth retrying, not a score


def _score_value(result: Any) -> float | None:
    value = getattr(result, "value", result)
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


class NonLLMScorer:
    """RAGAS's model-free metrics; an inapplicable metric (no gold, no answer) is None."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            # 0.4.3 points these at ragas.metrics.collections, which does not have them.
            warnings.simplefilter("ignore", DeprecationWarning)
            from ragas.metrics import IDBasedContextPrecision, IDBasedContextRecall
        from ragas.dataset_schema import SingleTurnSample
        from ragas.metrics.collections import CHRFScore, RougeScore

        self._sample_type = SingleTurnSample
        self.id_precision = IDBasedContextPrecision()
        self.id_recall = IDBasedContextRecall()
        self.rouge = RougeScore(rouge_type="rougeL", mode="fmeasure")
        self.chrf = CHRFScore()

    async def score(self, sample: Sample) -> dict[str, float | None]:
        scores: dict[str, float | None] = dict.fromkeys(NON_LLM_METRICS)
        if sample.answerable and sample.reference_ids and sample.retrieved_ids:
            ragas_sample = self._sample_type(
                retrieved_context_ids=sample.retrieved_ids,
                reference_context_ids=sample.reference_ids,
            )
            scores["id_context_precision"] = _score_value(
                await self.id_precision.single_turn_ascore(ragas_sample)
            )
            scores["id_context_recall"] = _score_value(
                await self.id_recall.single_turn_ascore(ragas_sample)
            )
        if sample.reference and sample.response:
            scores["rouge_l"] = _score_value(
                await self.rouge.ascore(reference=sample.reference, response=sample.response)
            )
            scores["chrf"] = _score_value(
                await self.chrf.ascore(reference=sample.reference, response=sample.response)
            )
        return scores


@dataclass(frozen=True)
class JudgeConfig:
    url: str
    model: str
    embedding_model: Path
    max_tokens: int = 512
    timeout_s: float = 300.0
    retries: int = 2  # instructor's re-asks after a reply that does not validate
    metrics: tuple[str, ...] = ()  # the judged metrics to run (eval.cli.JudgeMetric); empty: all
    api_key: str = "x"


class Judge:
    """The five LLM-judged RAGAS metrics, one judge call at a time (a CPU vLLM serves one best)."""

    def __init__(self, config: JudgeConfig) -> None:
        from openai import AsyncOpenAI
        from ragas.embeddings import HuggingFaceEmbeddings
        from ragas.llms import llm_factory
        from ragas.metrics.collections import (
            AnswerRelevancy,
            ContextPrecision,
            ContextRecall,
            FactualCorrectness,
            Faithfulness,
        )

        self.config = config
        client = AsyncOpenAI(
            base_url=config.url, api_key=config.api_key, timeout=config.timeout_s, max_retries=0
        )
        llm = llm_factory(
            config.model,
            provider="openai",
            client=client,
            max_tokens=config.max_tokens,
            max_retries=config.retries,
        )
        embeddings = HuggingFaceEmbeddings(
            model=str(config.embedding_model), device="cpu", local_files_only=True
        )
        self.faithfulness = Faithfulness(llm=llm)
        self.answer_relevancy = AnswerRelevancy(llm=llm, embeddings=embeddings)
        self.context_precision = ContextPrecision(llm=llm)
        self.context_recall = ContextRecall(llm=llm)
        self.factual_correctness = FactualCorrectness(llm=llm)

    def plan(self, sample: Sample) -> dict[str, Callable[[], Awaitable[Any]]]:
        """The metrics that apply to this sample: a declined answer has no claims to judge, an
        unanswerable question has no reference context."""
        calls: dict[str, Callable[[], Awaitable[Any]]] = {}
        answered = bool(sample.response.strip()) and not sample.declined
        contexts = [c for c in sample.retrieved_contexts if c.strip()]
        if answered and contexts:
            calls["faithfulness"] = lambda: self.faithfulness.ascore(
                user_input=sample.user_input, response=sample.response, retrieved_contexts=contexts
            )
        if answered:
            calls["answer_relevancy"] = lambda: self.answer_relevancy.ascore(
                user_input=sample.user_input, response=sample.response
            )
        if sample.answerable and sample.reference and contexts:
            calls["context_precision"] = lambda: self.context_precision.ascore(
                user_input=sample.user_input,
                reference=sample.reference,
                retrieved_contexts=contexts,
            )
            calls["context_recall"] = lambda: self.context_recall.ascore(
                user_input=sample.user_input,
                retrieved_contexts=contexts,
                reference=sample.reference,
            )
        if answered and sample.answerable and sample.reference:
            calls["factual_correctness"] = lambda: self.factual_correctness.ascore(
                response=sample.response, reference=sample.reference
            )
        wanted = self.config.metrics
        return {name: call for name, call in calls.items() if not wanted or name in wanted}

    async def judge(self, sample: Sample) -> JudgeOutcome:
        outcome = JudgeOutcome()
        started = time.perf_counter()
        for name, call in self.plan(sample).items():
            try:
                # Each judge call has its own timeout; this bounds a metric's whole chain.
                result = await asyncio.wait_for(call(), timeout=self.config.timeout_s * 12)
            except Exception as error:  # malformed JSON, validation, timeout, server error
                outcome.scores[name] = None
                outcome.errors[name] = _describe(error)
                outcome.unavailable = outcome.unavailable or _unreachable(error)
                continue
            value = _score_value(result)
            outcome.scores[name] = value
            if value is None:
                outcome.errors[name] = "no score (the judge produced nothing to score)"
        outcome.seconds = round(time.perf_counter() - started, 3)
        return outcome


def _unreachable(error: BaseException) -> bool:
    """A refused connection anywhere in the chain (instructor wraps the openai error)."""
    import openai

    seen: BaseException | None = error
    for _ in range(10):
        if seen is None:
            break
        if isinstance(seen, openai.APIConnectionError) and not isinstance(
            seen, openai.APITimeoutError
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return "Connection error" in str(error)


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if len(text) > 300:
        text = text[:300] + "…"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
