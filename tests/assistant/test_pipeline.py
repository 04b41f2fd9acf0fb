"""The question path (`Assistant`) on the bundled corpus, with a fake LLM that writes bad drafts
as well as good ones: what reaches the answer, what is cited, and that nothing crashes."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

import prompts
from assistant.api.services import build_services
from assistant.generate import answer_schema
from assistant.llm import LLMUnavailableError
from assistant.pipeline import AnswerUnavailableError, Assistant, Prepared, clean_question
from assistant.schemas import AskRequest, AskResponse, Message
from assistant.verify import decline_text
from ingest.embed import Embedder
from scholia.settings import Settings
from tests.fakes import FakeLLM, claims, states

PRODIFF_Q = "How many iterations does ProDiff need to synthesize high-fidelity mel-spectrograms?"
COMPARISON_Q = (
    "Compare how fast ProDiff synthesizes speech with how much GNNPipe reduces training time."
)
UNANSWERABLE_Q = "What batch size was used to pre-train CrisisTransformers?"


def make_assistant(
    settings: Settings, llm: FakeLLM, embedder: Embedder, **answer: Any
) -> Assistant:
    """The assistant the API builds, with some answer settings changed."""
    if answer:
        settings = settings.model_copy(update={"answer": settings.answer.model_copy(update=answer)})
    return build_services(settings, llm=llm, embedder=embedder).assistant


@pytest.fixture
def assistant(indexed_settings: Settings, fake_llm: FakeLLM, embedder: Embedder) -> Assistant:
    return make_assistant(indexed_settings, fake_llm, embedder)


def ask(assistant: Assistant, question: str, **request: Any) -> AskResponse:
    return asyncio.run(assistant.ask(AskRequest(question=question, **request)))


def prepare(assistant: Assistant, question: str) -> Prepared:
    return asyncio.run(assistant.prepare(AskRequest(question=question)))


def evidence_id(prepared: Prepared, phrase: str, title: str) -> str:
    """The id the prompt gave the sentence of paper `title` that contains `phrase`."""
    for source in prepared.packed:
        if source.paper.title.startswith(title):
            for key, sentence in source.evidence.items():
                if phrase in sentence:
                    return key
    raise AssertionError(f"no evidence sentence of {title!r} contains {phrase!r}")


def rank_of(response: AskResponse, title: str) -> int:
    return next(source.rank for source in response.sources if source.title.startswith(title))


def cited_titles(response: AskResponse) -> list[str]:
    return [source.title for source in response.sources if source.rank in response.citations]


def assert_quotes_prodiff_two_iterations(response: AskResponse) -> None:
    """The answer the ProDiff question should get: the figure 2, cited to ProDiff only."""
    assert not response.declined, response.answer
    assert states(response.answer, "2"), response.answer
    assert cited_titles(response) and all(t.startswith("ProDiff") for t in cited_titles(response))


def test_the_ideal_draft_is_answered_with_its_citation(assistant: Assistant) -> None:
    response = ask(assistant, PRODIFF_Q)
    assert_quotes_prodiff_two_iterations(response)
    assert response.sources[0].cited and response.sources[0].title.startswith("ProDiff")
    assert [e.rank for e in response.evidence] == [rank_of(response, "ProDiff")]


def test_a_garbled_figure_never_reaches_the_answer(assistant: Assistant, fake_llm: FakeLLM) -> None:
    key = evidence_id(prepare(assistant, PRODIFF_Q), "only 2 iterations", "ProDiff")
    fake_llm.reply = claims(
        ("ProDiff needs only 7 iterations to synthesize mel-spectrograms.", [key])
    )
    response = ask(assistant, PRODIFF_Q)
    assert not states(response.answer, "7"), response.answer
    assert_quotes_prodiff_two_iterations(response)
    assert response.unsupported == [0]


def test_the_question_echoed_back_is_not_given_as_the_answer(
    assistant: Assistant, fake_llm: FakeLLM
) -> None:
    key = evidence_id(prepare(assistant, PRODIFF_Q), "only 2 iterations", "ProDiff")
    fake_llm.reply = claims((PRODIFF_Q, [key]))
    response = ask(assistant, PRODIFF_Q)
    assert PRODIFF_Q.rstrip("?") not in response.answer
    assert_quotes_prodiff_two_iterations(response)


def test_a_citation_of_the_wrong_paper_is_not_credited_to_it(
    assistant: Assistant, fake_llm: FakeLLM
) -> None:
    prepared = prepare(assistant, COMPARISON_Q)
    prodiff_key = evidence_id(prepared, "24x faster", "ProDiff")
    gnnpipe_key = evidence_id(prepared, "per-epoch training time", "GNNPipe")
    fake_llm.reply = claims(  # each paper's figure, cited to the other paper's sentence
        ("ProDiff synthesizes speech 24x faster than real-time.", [gnnpipe_key]),
        ("GNNPipe reduces the per-epoch training time by up to 2.45x.", [prodiff_key]),
    )
    response = ask(assistant, COMPARISON_Q)
    prodiff, gnnpipe = rank_of(response, "ProDiff"), rank_of(response, "GNNPipe")
    credited = {
        figure: re.findall(rf"\b{re.escape(figure)}[^\[]*((?:\[\d+\])+)", response.answer)
        for figure in ("24x", "2.45x")
    }
    assert not response.declined and (credited["24x"] or credited["2.45x"]), response.answer
    assert all(markers == f"[{prodiff}]" for markers in credited["24x"]), response.answer
    assert all(markers == f"[{gnnpipe}]" for markers in credited["2.45x"]), response.answer


MALFORMED = {
    "empty": "",
    "a JSON list": "[1, 2]",
    "JSON null": "null",
    "no claims": json.dumps({"claims": []}),
    "claims without text": json.dumps({"claims": [{"evidence": ["1.1"]}]}),
}


@pytest.mark.parametrize("reply", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_reply_gives_a_quote_or_a_decline_never_a_crash(
    assistant: Assistant, fake_llm: FakeLLM, reply: str
) -> None:
    fake_llm.reply = reply
    response = ask(assistant, PRODIFF_Q)
    assert "{" not in response.answer and "claims" not in response.answer, response.answer
    if not response.declined:
        assert_quotes_prodiff_two_iterations(response)


JSON_NOT_READ = {
    "cut off mid-claim": '{"claims": [{"text": "ProDiff needs',  # max_tokens reached
    "claims not a list": json.dumps({"claims": "ProDiff needs 2 iterations"}),
}


@pytest.mark.parametrize("reply", JSON_NOT_READ.values(), ids=JSON_NOT_READ.keys())
def test_json_that_cannot_be_read_does_not_leak_into_the_answer(
    assistant: Assistant, fake_llm: FakeLLM, reply: str
) -> None:
    fake_llm.reply = reply
    response = ask(assistant, PRODIFF_Q)
    assert '"claims"' not in response.answer, response.answer


@pytest.mark.parametrize("evidence", [5, None])
def test_evidence_that_is_not_a_list_does_not_crash(
    assistant: Assistant, fake_llm: FakeLLM, evidence: object
) -> None:
    fake_llm.reply = json.dumps({"claims": [{"text": "ProDiff needs 2", "evidence": evidence}]})
    response = ask(assistant, PRODIFF_Q)
    assert response.declined or states(response.answer, "2")


def test_a_decline_when_the_sources_answer_is_overruled(
    assistant: Assistant, fake_llm: FakeLLM
) -> None:
    fake_llm.reply = json.dumps({"not_in_sources": True})
    assert_quotes_prodiff_two_iterations(ask(assistant, PRODIFF_Q))


def test_a_decline_lists_the_closest_papers_and_cites_none(
    assistant: Assistant, fake_llm: FakeLLM
) -> None:
    fake_llm.reply = json.dumps({"not_in_sources": True})
    closest = [paper.title for paper in prepare(assistant, UNANSWERABLE_Q).papers[:3]]
    response = ask(assistant, UNANSWERABLE_Q)
    assert response.declined and response.citations == [] and response.evidence == []
    assert response.answer.startswith(decline_text())
    assert closest and all(f"- {title}" in response.answer for title in closest)
    assert not any(source.cited for source in response.sources)


def test_who_wrote_a_paper_is_declined_with_why_when_its_record_does_not_say(
    assistant: Assistant,
) -> None:
    """The bundled papers are titles and abstracts: the fake model quotes an abstract sentence,
    which says nothing of who wrote the paper."""
    response = ask(assistant, "Name the authors of GNNPipe.")
    assert response.declined and response.citations == []
    assert prompts.declines("English")["record"] in response.answer


def test_a_name_no_source_mentions_is_declined_without_asking_the_llm(
    assistant: Assistant, fake_llm: FakeLLM
) -> None:
    response = ask(assistant, "How many iterations does ZorbNet need to synthesize speech?")
    assert response.declined and response.citations == []
    assert "No paper among the closest mentions ZorbNet." in response.answer
    assert fake_llm.calls == []  # no answer is drafted for a question the sources cannot answer


def test_a_size_the_question_states_is_a_setting_the_sources_must_state(
    assistant: Assistant, fake_llm: FakeLLM
) -> None:
    """A figure for another image size answers another question; the abstracts write a size
    in other forms ("64times 64", flattened from LaTeX)."""
    asked = "What FID does consistency training from scratch reach on ImageNet {}?"
    assert prepare(assistant, asked.format("64 × 64")).missing == []
    response = ask(assistant, asked.format("128x128"))
    assert response.declined and "No paper among the closest mentions 128x128." in response.answer
    assert fake_llm.calls == []


def test_a_refusal_is_written_in_the_question_language_not_translated_by_the_model(
    assistant: Assistant, fake_llm: FakeLLM
) -> None:
    question = "Wie viele Iterationen braucht ZorbNet, um Sprache zu synthetisieren?"
    closest = [paper.title for paper in prepare(assistant, question).papers[:3]]
    calls_before = len(fake_llm.calls)
    response = ask(assistant, question)
    assert response.declined and response.citations == []
    assert response.answer.startswith("Die Sammlung gibt darauf keine Antwort.")
    assert "Keiner der ähnlichsten Artikel erwähnt ZorbNet." in response.answer
    assert closest and all(f"- {title}" in response.answer for title in closest)  # untranslated
    asked = [json.dumps(call, default=str) for call in fake_llm.calls[calls_before:]]
    assert not any("Sammlung" in call or "collection" in call for call in asked)


def test_the_schema_is_sent_only_with_structured_output(
    indexed_settings: Settings, embedder: Embedder
) -> None:
    constrained, free = FakeLLM(), FakeLLM()
    structured = make_assistant(indexed_settings, constrained, embedder)
    assert_quotes_prodiff_two_iterations(ask(structured, PRODIFF_Q))
    assert constrained.schemas == [answer_schema(prepare(structured, PRODIFF_Q).packed)]

    unconstrained = make_assistant(indexed_settings, free, embedder, structured_output=False)
    response = ask(unconstrained, PRODIFF_Q)
    assert free.schemas == [None]
    assert_quotes_prodiff_two_iterations(response)


def test_verification_is_what_removes_a_garbled_figure(
    indexed_settings: Settings, fake_llm: FakeLLM, embedder: Embedder
) -> None:
    unverified = make_assistant(indexed_settings, fake_llm, embedder, verify=False)
    key = evidence_id(prepare(unverified, PRODIFF_Q), "only 2 iterations", "ProDiff")
    fake_llm.reply = claims(("ProDiff needs only 7 iterations.", [key]))
    response = ask(unverified, PRODIFF_Q)
    assert response.answer == "ProDiff needs only 7 iterations."


def test_usage_adds_up_the_condensing_and_the_answer(
    assistant: Assistant, fake_llm: FakeLLM
) -> None:
    history = [Message(role="user", content="Tell me about ProDiff.")]
    response = ask(assistant, PRODIFF_Q, history=history)
    condensing, _ = fake_llm.calls
    assert "Standalone question:" in condensing[-1].content
    assert response.usage.prompt_tokens == sum(
        len(message.content.split()) for call in fake_llm.calls for message in call
    )
    assert response.usage.completion_tokens > 0


def test_a_condensing_failure_is_unavailable_with_no_sources(
    assistant: Assistant, fake_llm: FakeLLM
) -> None:
    fake_llm.down = True
    history = [Message(role="user", content="Tell me about ProDiff.")]
    with pytest.raises(AnswerUnavailableError) as raised:
        ask(assistant, "How many iterations does it need?", history=history)
    assert raised.value.sources == [] and isinstance(raised.value.error, LLMUnavailableError)


def test_an_llm_failure_after_retrieval_keeps_the_sources(
    assistant: Assistant, fake_llm: FakeLLM
) -> None:
    fake_llm.down = True
    with pytest.raises(AnswerUnavailableError) as raised:
        ask(assistant, PRODIFF_Q)
    assert raised.value.sources[0].title.startswith("ProDiff")


def test_a_question_of_control_characters_only_is_refused(assistant: Assistant) -> None:
    with pytest.raises(ValueError, match="empty"):
        ask(assistant, "\x00\x07\u200b\n")


def test_clean_question_removes_control_characters_and_collapses_spaces() -> None:
    assert clean_question("  How\x00 many\n\titerations?\u200b ") == "How many iterations?"
