"""The path of a question: validate → condense → retrieve → pack → generate → verify → respond."""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass, field

import anyio

import prompts
from assistant.condense import condense
from assistant.extract import (
    correct_premise,
    cover_each_paper,
    name_cited_methods,
    quote_best_sentence,
)
from assistant.generate import answer_messages, generate, prompt_overhead
from assistant.llm import LLM, LLMError
from assistant.pack import TOKENIZER_MARGIN, PackedSource, pack
from assistant.retrieve import RetrievedPaper, Retriever
from assistant.schemas import AskRequest, AskResponse, Source, Timings, Usage
from assistant.settings import Settings
from assistant.translate import in_question_language
from assistant.verify import (
    Verdict,
    Verifier,
    decline_text,
    is_decline,
    missing_terms,
    names_found,
    without_markup,
)


class AnswerUnavailableError(RuntimeError):
    """The LLM failed; what retrieval found is still worth returning."""

    def __init__(self, error: LLMError, sources: list[Source]) -> None:
        super().__init__(str(error))
        self.error = error
        self.sources = sources


@dataclass
class Prepared:
    """Everything decided before generation: the question, the sources and the prompt."""

    question: str
    packed: list[PackedSource]
    papers: list[RetrievedPaper]
    timings: Timings
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = 0.0
    missing: list[str] = field(default_factory=list)  # names in the question no source mentions

    @property
    def confident(self) -> bool:
        return bool(self.packed) and not self.missing


def clean_question(text: str) -> str:
    """Control characters out, whitespace collapsed; the text itself is kept as data."""
    printable = "".join(
        char if unicodedata.category(char)[0] != "C" else " " for char in text.replace("\n", " ")
    )
    return " ".join(printable.split())


class Assistant:
    def __init__(
        self, retriever: Retriever, llm: LLM, verifier: Verifier, settings: Settings
    ) -> None:
        self.retriever = retriever
        self.llm = llm
        self.verifier = verifier
        self.settings = settings

    async def search(
        self, query: str, top_k: int, filters: dict[str, str | int | float | bool] | None = None
    ) -> list[Source]:
        papers = await anyio.to_thread.run_sync(
            lambda: self.retriever.search(clean_question(query), top_k, filters=filters)
        )
        return [_source(rank, paper, paper.text) for rank, paper in enumerate(papers, start=1)]

    async def prepare(self, request: AskRequest) -> Prepared:
        started = time.perf_counter()
        timings = Timings()
        question = clean_question(request.question)
        if not question:
            raise ValueError("The question is empty once control characters are removed.")

        tick = time.perf_counter()
        usage_prompt = usage_completion = 0
        if request.history:
            try:
                question, completion = await condense(question, request.history, self.llm)
            except LLMError as error:
                raise AnswerUnavailableError(error, []) from error
            if completion:
                usage_prompt, usage_completion = (
                    completion.prompt_tokens,
                    completion.completion_tokens,
                )
            question = clean_question(question)
        timings.condense = _ms(tick)

        tick = time.perf_counter()
        papers = await anyio.to_thread.run_sync(
            lambda: self.retriever.search(question, request.top_k, filters=request.filters)
        )
        timings.retrieve = _ms(tick)

        packed: list[PackedSource] = []
        if papers and (
            max(p.dense_score for p in papers) >= self.settings.answer.min_dense_score
            or names_found(question, papers[0])
        ):
            try:
                window = await self.llm.context_window()
            except LLMError as error:
                raise AnswerUnavailableError(error, _sources_of(papers)) from error
            room = int((window - self.settings.llm.max_answer_tokens) * (1 - TOKENIZER_MARGIN))
            budget = min(self.settings.answer.prompt_budget_tokens, room)
            budget -= prompt_overhead(question)  # what is left for the sources
            packed = pack(papers, budget, question, self.verifier.similarities)
        prepared = Prepared(
            question, packed, papers, timings, usage_prompt, usage_completion, started
        )
        if packed and self.settings.answer.verify:
            prepared.missing = missing_terms(question, packed)
        return prepared

    async def ask(self, request: AskRequest) -> AskResponse:
        prepared = await self.prepare(request)
        draft = ""
        if prepared.confident:
            tick = time.perf_counter()
            try:
                completion = await generate(
                    self.llm,
                    answer_messages(prepared.question, prepared.packed),
                    self.settings.llm.max_answer_tokens,
                )
            except LLMError as error:
                raise AnswerUnavailableError(error, self.sources_of(prepared)) from error
            prepared.timings.generate = _ms(tick)
            prepared.prompt_tokens += completion.prompt_tokens
            prepared.completion_tokens += completion.completion_tokens
            draft = completion.text
        return await self.respond(prepared, draft)

    async def respond(self, prepared: Prepared, draft: str) -> AskResponse:
        tick = time.perf_counter()
        verdict = await anyio.to_thread.run_sync(lambda: self.verify(draft, prepared))
        prepared.timings.verify = _ms(tick)
        verdict, prompt_tokens, completion_tokens = await in_question_language(
            verdict, prepared.question, self.llm, self.settings.llm.max_answer_tokens
        )
        prepared.prompt_tokens += prompt_tokens
        prepared.completion_tokens += completion_tokens
        sources = self.sources_of(prepared)
        cited = set(verdict.citations)
        for source in sources:
            source.cited = source.rank in cited
        sources.sort(key=lambda source: (not source.cited, source.rank))
        answer = verdict.answer
        if verdict.declined:
            answer = _decline_with_closest(prepared.papers, prepared.missing)
        prepared.timings.total = _ms(prepared.started)
        return AskResponse(
            answer=answer,
            declined=verdict.declined,
            citations=verdict.citations,
            sources=sources,
            model=self.llm.model,
            timings_ms=prepared.timings,
            usage=Usage(
                prompt_tokens=prepared.prompt_tokens, completion_tokens=prepared.completion_tokens
            ),
            question=prepared.question,
            unsupported=verdict.unsupported,
        )

    def verify(self, draft: str, prepared: Prepared) -> Verdict:
        """The draft's supported sentences (else a quote from the sources, else a refusal), with
        each paper a comparison asks about covered, false premises corrected, methods named."""
        packed, settings = prepared.packed, self.settings.answer
        question = without_markup(prepared.question)
        if not packed or not draft.strip():
            return Verdict(decline_text(), [], [], True)
        if not settings.verify:
            declined = is_decline(draft)
            return Verdict(draft.strip(), [], [], declined)
        verdict = self.verifier.check(draft, packed, question)
        if settings.extractive_fallback:
            quoted = None
            if verdict.declined:
                quoted = quote_best_sentence(
                    question, draft, packed, self.verifier, settings.fallback_min_similarity
                )
            if quoted is not None:
                verdict = Verdict(quoted.answer, quoted.citations, verdict.unsupported, False)
            verdict = cover_each_paper(
                verdict, question, packed, self.verifier, settings.fallback_min_similarity
            )
        verdict = correct_premise(
            verdict, question, packed, self.verifier, settings.fallback_min_similarity
        )
        return name_cited_methods(verdict, packed, question)

    def sources_of(self, prepared: Prepared) -> list[Source]:
        """Every retrieved paper: first those in the prompt, with what the model was shown (the
        kept sentences, " … " where some were left out) under the ranks its citations use; then
        the ones the prompt budget left out, whole."""
        if not prepared.packed:
            return _sources_of(prepared.papers)
        shown = [_source(p.rank, p.paper, p.shown or p.text) for p in prepared.packed]
        in_prompt = {p.paper.id for p in prepared.packed}
        left_out = [paper for paper in prepared.papers if paper.id not in in_prompt]
        return shown + [
            _source(rank, paper, paper.text) for rank, paper in enumerate(left_out, len(shown) + 1)
        ]


def _sources_of(papers: list[RetrievedPaper]) -> list[Source]:
    return [_source(rank, paper, paper.text) for rank, paper in enumerate(papers, start=1)]


def _source(rank: int, paper: RetrievedPaper, text: str) -> Source:
    return Source(
        rank=rank,
        id=paper.id,
        title=paper.title,
        text=text,
        score=round(paper.score, 6),
        metadata=paper.metadata,
    )


def _decline_with_closest(papers: list[RetrievedPaper], missing: list[str]) -> str:
    text = decline_text()
    if missing:
        text += " " + prompts.load("decline_missing").format(terms=", ".join(missing)).strip()
    if not papers:
        return text
    closest = "\n".join(f"- {paper.title}" for paper in papers[:3])
    return text + "\n" + prompts.load("decline_closest").format(closest=closest).strip()


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)
