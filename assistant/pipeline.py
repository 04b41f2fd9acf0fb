"""The path of a question: validate → condense → retrieve → pack → generate → verify → respond."""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass, field, replace

import anyio

import prompts
from assistant.analyse import RECORD, QuestionAnalysis, analyse, missing_names
from assistant.condense import condense
from assistant.generate import (
    Draft,
    answer_messages,
    answer_schema,
    generate,
    prompt_overhead,
    read_draft,
)
from assistant.llm import LLM, JsonSchema, LLMError
from assistant.pack import TOKENIZER_MARGIN, PackedSource, pack
from assistant.retrieve import RetrievedPaper, Retriever
from assistant.schemas import AskRequest, AskResponse, EvidenceSentence, Source, Timings, Usage
from assistant.translate import in_question_language, translate
from assistant.verify import Verdict, Verifier, decline_text, declined
from scholia.settings import Settings


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
    analysis: QuestionAnalysis
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
        self,
        query: str,
        top_k: int | None = None,
        filters: dict[str, str | int | float | bool] | None = None,
    ) -> list[Source]:
        count = top_k or self.settings.retrieval.top_k
        papers = await anyio.to_thread.run_sync(
            lambda: self.retriever.search(clean_question(query), count, filters=filters)
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

        analysis, english_tokens = await self._analyse(question)
        usage_prompt += english_tokens[0]
        usage_completion += english_tokens[1]
        tick = time.perf_counter()
        count = request.top_k or self.settings.retrieval.top_k
        papers = await anyio.to_thread.run_sync(
            lambda: self.retriever.search(
                analysis.text,
                count,
                filters=request.filters,
                parts=analysis.parts,
                described=analysis.compared,
            )
        )
        timings.retrieve = _ms(tick)

        packed: list[PackedSource] = []
        if papers and (
            max(p.dense_score for p in papers) >= self.settings.answer.min_dense_score
            or _names_found(analysis, papers[0])
        ):
            try:
                window = await self.llm.context_window()
            except LLMError as error:
                raise AnswerUnavailableError(error, _sources_of(papers)) from error
            room = int((window - self.settings.llm.max_answer_tokens) * (1 - TOKENIZER_MARGIN))
            budget = min(self.settings.answer.prompt_budget_tokens, room)
            budget -= prompt_overhead(analysis.text)  # what is left for the sources
            packed = pack(papers, budget, analysis, self.verifier.similarity)
        prepared = Prepared(
            question, analysis, packed, papers, timings, usage_prompt, usage_completion, started
        )
        if packed and self.settings.answer.verify:
            texts = (f"{p.paper.title}. {p.text}" for p in packed)
            prepared.missing = missing_names(analysis.names, texts)
        return prepared

    async def _analyse(self, question: str) -> tuple[QuestionAnalysis, tuple[int, int]]:
        """The question analysed; one in another language through its English rendering (the
        papers are English), keeping the language it was asked in."""
        analysis = analyse(question)
        if analysis.language == "English":
            return analysis, (0, 0)
        english = await translate(
            analysis.text, "English", self.llm, self.settings.llm.max_answer_tokens, restore=True
        )
        if english is None:
            return analysis, (0, 0)
        rendered = replace(analyse(english.text), language=analysis.language)
        return rendered, (english.prompt_tokens, english.completion_tokens)

    def schema(self, prepared: Prepared) -> JsonSchema | None:
        return answer_schema(prepared.packed) if self.settings.answer.structured_output else None

    async def ask(self, request: AskRequest) -> AskResponse:
        prepared = await self.prepare(request)
        draft = ""
        if prepared.confident:
            tick = time.perf_counter()
            try:
                completion = await generate(
                    self.llm,
                    answer_messages(prepared.analysis.text, prepared.packed),
                    self.settings.llm.max_answer_tokens,
                    self.schema(prepared),
                )
            except LLMError as error:
                raise AnswerUnavailableError(error, self.sources_of(prepared)) from error
            prepared.timings.generate = _ms(tick)
            prepared.prompt_tokens += completion.prompt_tokens
            prepared.completion_tokens += completion.completion_tokens
            draft = completion.text
        return await self.respond(prepared, draft)

    async def respond(self, prepared: Prepared, reply: str) -> AskResponse:
        tick = time.perf_counter()
        draft = read_draft(reply, prepared.packed)
        verdict = await anyio.to_thread.run_sync(lambda: self.verify(draft, prepared))
        prepared.timings.verify = _ms(tick)
        if verdict.declined:
            answer = _decline_with_closest(prepared.papers, prepared.missing, prepared.analysis)
            verdict = replace(verdict, answer=answer)
        verdict, prompt_tokens, completion_tokens = await in_question_language(
            verdict, prepared.analysis.language, self.llm, self.settings.llm.max_answer_tokens
        )
        prepared.prompt_tokens += prompt_tokens
        prepared.completion_tokens += completion_tokens
        sources = self.sources_of(prepared)
        cited = set(verdict.citations)
        for source in sources:
            source.cited = source.rank in cited
        sources.sort(key=lambda source: (not source.cited, source.rank))
        evidence = {key: s for p in prepared.packed for key, s in p.evidence.items()}
        prepared.timings.total = _ms(prepared.started)
        return AskResponse(
            answer=verdict.answer,
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
            evidence=[
                EvidenceSentence(id=key, rank=int(key.split(".")[0]), text=evidence[key])
                for key in verdict.evidence
                if key in evidence
            ],
        )

    def verify(self, draft: Draft, prepared: Prepared) -> Verdict:
        """The draft's supported claims, checked by the verifier's steps; without verification,
        the claims as written."""
        if not prepared.confident:
            return declined()
        if not self.settings.answer.verify:
            text = " ".join(claim.text for claim in draft.claims)
            return Verdict(text or decline_text(), [], [], draft.declined)
        return self.verifier.verify(draft, prepared.analysis, prepared.packed)

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


def _names_found(analysis: QuestionAnalysis, paper: RetrievedPaper) -> bool:
    """The question names things and the paper mentions every one of them: a confident match
    even when the embedding (English-only MiniLM) misses a question in another language."""
    text = f"{paper.title}. {paper.text}"
    return bool(analysis.names) and not missing_names(analysis.names, [text])


def _decline_with_closest(
    papers: list[RetrievedPaper], missing: list[str], analysis: QuestionAnalysis
) -> str:
    """The refusal in the question's language, the closest papers' titles as they are."""
    phrases = prompts.declines(analysis.language)
    text = decline_text(analysis.language)
    if missing:
        text += " " + phrases["missing"].format(terms=", ".join(missing))
    if analysis.measure in RECORD:
        text += " " + phrases["record"]
    if not papers:
        return text
    return "\n".join([text, phrases["closest"], *(f"- {paper.title}" for paper in papers[:3])])


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)
