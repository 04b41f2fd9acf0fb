"""RAGAS metrics, computed by `ragas` itself (0.4.3): the model-free ones (ID-based context
precision/recall, ROUGE-L, chrF) and the LLM-judged ones of `ragas.metrics.collections`, asked of
any OpenAI-compatible judge. A failed judge call never stops a run: that score is missing, and
why is kept."""

from __future__ import annotations

import asyncio
import math
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ragas.dataset_schema import SingleTurnSample

NON_LLM_METRICS = ("id_context_precision", "id_context_recall", "rouge_l", "chrf")
_JUDGED = "faithfulness answer_relevancy context_precision context_recall factual_correctness"
JUDGE_METRICS = tuple(_JUDGED.split())


@dataclass
class JudgeOutcome:
    scores: dict[str, float | None] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    unavailable: bool = False  # the judge could not be reached: worth retrying, not a score


def _value(result: Any) -> float | None:
    value = getattr(result, "value", result)
    return None if value is None or math.isnan(float(value)) else float(value)


class NonLLMScorer:
    """RAGAS's model-free metrics; an inapplicable metric (no gold, no answer) is None."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            # 0.4.3 points these at ragas.metrics.collections, which does not have them.
            warnings.simplefilter("ignore", DeprecationWarning)
            from ragas.metrics import IDBasedContextPrecision, IDBasedContextRecall
        from ragas.metrics.collections import CHRFScore, RougeScore

        self.id_precision, self.id_recall = IDBasedContextPrecision(), IDBasedContextRecall()
        self.rouge, self.chrf = RougeScore(rouge_type="rougeL", mode="fmeasure"), CHRFScore()

    async def score(self, sample: SingleTurnSample, answerable: bool) -> dict[str, float | None]:
        scores: dict[str, float | None] = dict.fromkeys(NON_LLM_METRICS)
        if answerable and sample.reference_context_ids and sample.retrieved_context_ids:
            precision = await self.id_precision.single_turn_ascore(sample)
            scores["id_context_precision"] = _value(precision)
            scores["id_context_recall"] = _value(await self.id_recall.single_turn_ascore(sample))
        if sample.reference and sample.response:
            texts = {"reference": sample.reference, "response": sample.response}
            scores["rouge_l"] = _value(await self.rouge.ascore(**texts))
            scores["chrf"] = _value(await self.chrf.ascore(**texts))
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


class Judge:
    """The five LLM-judged RAGAS metrics, one judge call at a time (a CPU vLLM serves one best)."""

    def __init__(self, config: JudgeConfig) -> None:
        from openai import AsyncOpenAI
        from ragas.embeddings import HuggingFaceEmbeddings
        from ragas.llms import llm_factory
        from ragas.metrics import collections as ragas

        self.config = config
        client = AsyncOpenAI(
            base_url=config.url, api_key="x", timeout=config.timeout_s, max_retries=0
        )
        limits: dict[str, Any] = {"max_tokens": config.max_tokens, "max_retries": config.retries}
        llm = llm_factory(config.model, provider="openai", client=client, **limits)
        embeddings = HuggingFaceEmbeddings(
            model=str(config.embedding_model), device="cpu", local_files_only=True
        )
        self.metrics = {
            "faithfulness": ragas.Faithfulness(llm=llm),
            "answer_relevancy": ragas.AnswerRelevancy(llm=llm, embeddings=embeddings),
            "context_precision": ragas.ContextPrecision(llm=llm),
            "context_recall": ragas.ContextRecall(llm=llm),
            "factual_correctness": ragas.FactualCorrectness(llm=llm),
        }

    def plan(
        self, sample: SingleTurnSample, answerable: bool, declined: bool
    ) -> dict[str, Callable[[], Awaitable[Any]]]:
        """The metrics that apply to this sample: a declined answer has no claims to judge, an
        unanswerable question has no reference context."""
        answered = bool((sample.response or "").strip()) and not declined
        contexts = [c for c in sample.retrieved_contexts or [] if c.strip()]
        referenced = answerable and bool(sample.reference)
        given: dict[str, Any] = {"user_input": sample.user_input, "response": sample.response}
        given |= {"reference": sample.reference, "retrieved_contexts": contexts}
        contextual = "user_input reference retrieved_contexts"
        asks = {  # metric: (whether it applies, what it is given)
            "faithfulness": (answered and contexts, "user_input response retrieved_contexts"),
            "answer_relevancy": (answered, "user_input response"),
            "context_precision": (referenced and contexts, contextual),
            "context_recall": (referenced and contexts, contextual),
            "factual_correctness": (answered and referenced, "response reference"),
        }
        wanted = self.config.metrics or JUDGE_METRICS
        return {
            name: partial(self.metrics[name].ascore, **{key: given[key] for key in keys.split()})
            for name, (applies, keys) in asks.items()
            if applies and name in wanted
        }

    async def judge(
        self, sample: SingleTurnSample, answerable: bool, declined: bool
    ) -> JudgeOutcome:
        outcome = JudgeOutcome()
        started = time.perf_counter()
        for name, call in self.plan(sample, answerable, declined).items():
            try:
                # Each judge call has its own timeout; this bounds a metric's whole chain.
                result = await asyncio.wait_for(call(), timeout=self.config.timeout_s * 12)
            except Exception as error:  # malformed JSON, validation, timeout, server error
                outcome.scores[name] = None
                kind, text = type(error).__name__, " ".join(str(error).split())
                text = text[:300] + "…" if len(text) > 300 else text
                outcome.errors[name] = f"{kind}: {text}" if text else kind
                outcome.unavailable = outcome.unavailable or _unreachable(error)
                continue
            value = _value(result)
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
        refused = isinstance(seen, openai.APIConnectionError)
        if refused and not isinstance(seen, openai.APITimeoutError):
            return True
        seen = seen and (seen.__cause__ or seen.__context__)
    return "Connection error" in str(error)
