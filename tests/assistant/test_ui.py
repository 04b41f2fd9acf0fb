"""The Gradio UI: escaping and rendering, and its `/ask` endpoint driven by gradio_client over HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from gradio_client import Client
from pydantic import SecretStr

from assistant.api.main import create_app
from assistant.api.services import build_services
from assistant.schemas import AskResponse, EvidenceSentence, Source, Timings, Usage
from assistant.ui import escape_text, history_of, question_for, render_answer, render_sources
from ingest.embed import Embedder
from scholia.settings import Settings
from tests.assistant.api.conftest import configured
from tests.assistant.api.live import serve
from tests.fakes import FakeLLM

PRODIFF_Q = "How many iterations does ProDiff need to synthesize high-fidelity mel-spectrograms?"
HOSTILE = "<img src=x onerror=\"document.title='pwned'\"><script>alert(1)</script> ![i](http://x/i.png) [l](javascript:alert(1)) $$x$$"
KEY = "ui-key"


def response(answer: str, sources: list[Source], **extra: object) -> AskResponse:
    return AskResponse(
        answer=answer,
        declined=False,
        citations=[1],
        sources=sources,
        model="fake",
        timings_ms=Timings(),
        usage=Usage(),
        question="q",
        **extra,
    )


def hostile_source(rank: int = 1, cited: bool = True) -> Source:
    return Source(rank=rank, id="p", title=HOSTILE, text=HOSTILE, score=0.5, cited=cited)


def test_hostile_text_is_escaped_everywhere() -> None:
    # Chat messages go through Markdown: neither HTML nor Markdown/LaTeX syntax survives.
    for rendered in (
        escape_text(HOSTILE),
        render_answer(response(HOSTILE + " [1]", [hostile_source()])),
    ):
        assert "<img" not in rendered and "<script" not in rendered
        assert "](" not in rendered and "$$" not in rendered
    # The sources panel is plain HTML (no Markdown): HTML-escaped.
    panel = render_sources([hostile_source()])
    assert "<img" not in panel and "<script" not in panel and "&lt;img src=x" in panel
    assert "onerror" in escape_text(HOSTILE)  # shown as text, not dropped


def test_citations_link_to_their_source_and_cited_sources_are_marked() -> None:
    sources = [
        Source(rank=1, id="a", title="ProDiff", text="needs 2 iterations", score=0.9, cited=True),
        Source(rank=2, id="b", title="Other", text="...", score=0.1),
    ]
    html = render_answer(response("ProDiff needs 2 iterations. [1] Unknown [7].", sources))
    assert (
        '<a class="scholia-cite" href="#source-1" title="Source 1: ProDiff">&#91;1&#93;</a>' in html
    )
    assert "&#91;7&#93;" in html and 'href="#source-7"' not in html  # no target, no link
    panel = render_sources(sources)
    assert "id='source-1'" in panel and "id='source-2'" in panel
    assert panel.count("★ cited") == 1 and "score 0.9000" in panel
    assert "1 cited" in panel


def test_the_evidence_the_answer_used_is_highlighted_and_escaped() -> None:
    text = "Diffusion is slow. ProDiff needs 2 iterations. It is <b>fast</b>."
    sources = [Source(rank=1, id="a", title="ProDiff", text=text, score=0.9, cited=True)]
    used = [
        EvidenceSentence(id="1.2", rank=1, text="ProDiff needs 2 iterations."),
        EvidenceSentence(id="1.3", rank=1, text="It is <b>fast</b>."),
    ]
    panel = render_sources(sources, evidence=used)
    assert "<mark class='scholia-evidence'>ProDiff needs 2 iterations.</mark>" in panel
    assert "<mark class='scholia-evidence'>It is &lt;b&gt;fast&lt;/b&gt;.</mark>" in panel
    assert "<mark class='scholia-evidence'>Diffusion" not in panel and "<b>" not in panel
    assert "<mark" not in render_sources(sources)  # nothing used, nothing marked


def test_removed_statements_are_noted_and_history_reads_back_as_text() -> None:
    sources = [Source(rank=1, id="a", title="T", text="x", score=1.0, cited=True)]
    html = render_answer(response("It needs 2 steps (fast). [1]", sources, unsupported=[1]))
    assert "1 statement of the draft removed" in html
    chat = [
        {"role": "user", "content": escape_text("What about <b>ProDiff</b>?")},
        {"role": "assistant", "content": html},
        {"role": "assistant", "content": "⚠ The language model is not answering right now."},
    ]
    past = history_of(chat)
    assert [(m.role, m.content) for m in past] == [
        ("user", "What about <b>ProDiff</b>?"),
        ("assistant", "It needs 2 steps (fast). [1]"),
    ]


def test_example_questions_name_the_paper() -> None:
    assert question_for("ProDiff: Progressive Fast Diffusion") == (
        "What is ProDiff and what problem does it solve?"
    )
    assert question_for("A Long Title Without Colon") == (
        "What does the paper “A Long Title Without Colon” propose?"
    )


@pytest.fixture(scope="module")
def ui_llm() -> FakeLLM:
    return FakeLLM()


@pytest.fixture(scope="module")
def ui_url(indexed_settings: Settings, embedder: Embedder, ui_llm: FakeLLM) -> Iterator[str]:
    settings = configured(indexed_settings, api_key=SecretStr(KEY))
    app = create_app(settings, build_services(settings, llm=ui_llm, embedder=embedder))
    with serve(app) as url:
        yield url + "/ui/"


@pytest.fixture
def ui(ui_url: str, ui_llm: FakeLLM) -> Client:
    ui_llm.down, ui_llm.calls = False, []
    return Client(ui_url, auth=("reader", KEY), verbose=False)


def test_gradio_client_gets_a_cited_answer(ui: Client) -> None:
    chat, question, panel = ui.predict(PRODIFF_Q, [], 3, api_name="/ask")
    assert question == ""
    assert [turn["role"] for turn in chat] == ["user", "assistant"]
    answer = chat[-1]["content"]
    answer = answer if isinstance(answer, str) else answer[0]["text"]
    assert "2 iterations" in answer.replace("&#46;", ".")
    assert 'href="#source-1"' in answer
    assert "★ cited" in panel and "ProDiff: Progressive Fast Diffusion" in panel
    assert len(re.findall(r"class='scholia-source", panel)) == 3  # top-k respected


def test_a_follow_up_uses_the_conversation(ui: Client, ui_llm: FakeLLM) -> None:
    chat, _, _ = ui.predict(PRODIFF_Q, [], 3, api_name="/ask")
    ui_llm.calls = []
    chat, _, _ = ui.predict("and how fast is it?", chat, 3, api_name="/ask")
    assert len(chat) == 4
    assert "Standalone question" in ui_llm.calls[0][-1].content
    assert "ProDiff" in ui_llm.calls[0][-1].content


def test_llm_down_gives_a_clear_message_and_the_sources(ui: Client, ui_llm: FakeLLM) -> None:
    ui_llm.down = True
    chat, _, panel = ui.predict(PRODIFF_Q, [], 3, api_name="/ask")
    message = chat[-1]["content"]
    message = message if isinstance(message, str) else message[0]["text"]
    assert message.startswith("⚠ The language model is not answering right now")
    assert "ProDiff" in panel


def test_the_ui_needs_the_api_key(ui_url: str) -> None:
    with pytest.raises(Exception, match=r"(?i)auth|login|401"):
        Client(ui_url, verbose=False).predict(PRODIFF_Q, [], 3, api_name="/ask")
    with pytest.raises(Exception, match=r"(?i)auth|login|credential"):
        Client(ui_url, auth=("reader", "wrong"), verbose=False)
