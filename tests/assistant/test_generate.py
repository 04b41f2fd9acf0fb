import json

from assistant.generate import Claim, answer_messages, answer_schema, claims_text, read_draft
from assistant.pack import PackedSource
from assistant.retrieve import RetrievedPaper
from tests.fakes import claims

SOURCES = [
    PackedSource(1, RetrievedPaper("a", "ProDiff", "One. Two.", 0.9), "One. Two."),
    PackedSource(2, RetrievedPaper("b", "GNNPipe", "Three.", 0.5), "Three."),
]


def test_evidence_is_numbered_in_the_prompt_and_the_schema() -> None:
    prompt = answer_messages("Why?", SOURCES)[-1].content
    assert "[1] ProDiff\n[1.1] One.\n[1.2] Two." in prompt and "[2.1] Three." in prompt
    answered, not_answered = answer_schema(SOURCES)["anyOf"]
    item = answered["properties"]["claims"]["items"]["properties"]["evidence"]["items"]
    assert item["enum"] == ["1.1", "1.2", "2.1"]
    assert not_answered["required"] == ["not_in_sources"]


def test_a_json_draft() -> None:
    draft = read_draft(claims(("ProDiff is fast.", ["1.2"]), ("GNNPipe too.", ["2.1"])), SOURCES)
    assert draft.claims == (Claim("ProDiff is fast.", ("1.2",)), Claim("GNNPipe too.", ("2.1",)))
    assert not draft.declined


def test_not_in_sources_is_an_explicit_outcome() -> None:
    draft = read_draft(json.dumps({"not_in_sources": True}), SOURCES)
    assert draft.declined and not draft.claims


def test_free_text_from_an_unconstrained_server() -> None:
    draft = read_draft(
        "ProDiff is fast [1]. GNNPipe scales [2.1]. The sources do not say.", SOURCES
    )
    assert draft.claims == (
        Claim("ProDiff is fast [1].", ("1.1", "1.2")),  # [1]: any of paper 1's evidence
        Claim("GNNPipe scales [2.1].", ("2.1",)),
    )
    assert read_draft("The collection does not say.", SOURCES).declined


def test_streamed_json_shows_only_the_claims_text() -> None:
    reply = claims(('It runs 24x "faster".', ["1.2"]), ("Second.", ["2.1"]))
    assert claims_text(reply) == 'It runs 24x "faster". Second.'
    partial = '{"claims":[{"text":"It runs 24'
    assert claims_text(partial) == "It runs 24"
    assert claims_text('{"not_in_sources":true}') == ""
    assert claims_text("free text [1]") == "free text [1]"
