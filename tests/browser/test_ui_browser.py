"""Headless Chromium against the real app (uvicorn, FakeLLM): a user types a question, clicks
Ask, and sees the answer and the sources; `/ui/?q=` asks on load; hostile markup in a question
or an abstract shows as text and runs nothing, in the chat and in the Library tab; a paper
uploaded in the Library tab answers questions at once.

Artifacts (screenshots, page text, DOM) go to test-artifacts/ (gitignored).
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.api.main import create_app
from assistant.api.services import build_services
from ingest.embed import Embedder
from ingest.parse import Paper, read_papers
from ingest.pipeline import run_ingest
from scholia.settings import BUNDLED_CORPUS, PROJECT_ROOT, Settings
from tests.assistant.api.live import serve
from tests.browser.cdp import Page, browser, chromium_path
from tests.fakes import FakeLLM

pytestmark = pytest.mark.browser

CHROMIUM = chromium_path()
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip(
        "chromium is not installed (`make browser`); in CI it must be", allow_module_level=True
    )

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
PRODIFF_Q = "How many iterations does ProDiff need to synthesize high-fidelity mel-spectrograms?"
ZEBRA_Q = "How accurate is ZebraNet at detecting zebra crossings in city images?"
QUESTION_ATTACK = "<img src=x onerror=\"document.title='pwned-by-question'\">"
TITLE_ATTACK = "<script>document.title='pwned-by-title'</script>"
ABSTRACT_ATTACK = "<img src=x onerror=\"document.title='pwned-by-abstract'\">"
HOSTILE_PAPER = {
    "title": f"ZebraNet {TITLE_ATTACK}: Detecting Zebra Crossings",
    "abstract": (
        "Pedestrian crossings matter for accessible navigation in dense cities. "
        f"ZebraNet {ABSTRACT_ATTACK} detects zebra crossings in city images with 97 percent accuracy. "
        "It runs on a phone in real time and needs no map data, which makes it cheap to deploy."
    ),
}
SOURCES_DONE = "document.querySelector('#scholia-sources')?.innerText.includes(' cited')"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[str]:
    """A small index: three real papers and one with script in its title and abstract."""
    folder = tmp_path_factory.mktemp("browser")
    real = [item for item in read_papers(BUNDLED_CORPUS) if isinstance(item, Paper)]
    chosen = [p for p in real if p.title.startswith(("ProDiff", "GNNPipe"))] + real[:2]
    corpus = folder / "papers.jsonl"
    records = [{"title": p.title, "abstract": p.abstract} for p in chosen] + [HOSTILE_PAPER]
    corpus.write_text("".join(json.dumps(record) + "\n" for record in records))
    settings = Settings(data_dir=folder / "data", corpus=corpus)
    run_ingest(settings, [corpus], embedder=embedder, log=lambda _: None)
    app = create_app(settings, build_services(settings, llm=FakeLLM(), embedder=embedder))
    with serve(app) as url:
        yield url


@pytest.fixture
def page() -> Iterator[Page]:
    assert CHROMIUM is not None, "chromium is required in CI"
    with browser(CHROMIUM) as opened:
        yield opened


def ask(page: Page, base_url: str, question: str) -> None:
    page.goto(f"{base_url}/ui/")
    # Ready when the on-load event has filled in the example questions.
    page.wait_for("document.querySelector('#scholia-examples')?.innerText.includes('What')")
    page.type("#scholia-question textarea", question)
    page.click("#scholia-ask")
    try:
        page.wait_for(SOURCES_DONE, timeout=90)
    except TimeoutError:
        keep(page, "ui-timeout")
        raise
    page.eval("window.scrollTo(0, 0)")


def keep(page: Page, name: str) -> str:
    """Screenshot, page text and DOM under test-artifacts/; returns the page text."""
    page.screenshot(ARTIFACTS / f"{name}.png")
    text = page.text()
    (ARTIFACTS / f"{name}.txt").write_text(text)
    (ARTIFACTS / f"{name}.html").write_text(str(page.eval("document.documentElement.outerHTML")))
    return text


def test_typing_a_question_shows_the_cited_answer_and_the_sources(
    page: Page, base_url: str
) -> None:
    ask(page, base_url, PRODIFF_Q)
    text = keep(page, "ui-answer")
    chat, sources = page.text("#scholia-chat"), page.text("#scholia-sources")
    assert PRODIFF_Q in chat
    assert "ProDiff needs only 2 iterations" in chat and "[1]" in chat
    assert "ProDiff: Progressive Fast Diffusion Model" in sources
    assert "★ cited" in sources and "score 0." in sources and "Denoising diffusion" in sources
    assert "Example questions from the collection" in text
    # The [1] marker links to its source in the panel, in the same page.
    page.click("#scholia-chat a.scholia-cite")
    page.wait_for("location.hash === '#source-1'")
    assert page.eval("document.querySelectorAll('#source-1').length") == 1


def test_a_question_in_the_link_is_asked_on_load(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/ui/?q={urllib.parse.quote(PRODIFF_Q)}&k=3")
    page.wait_for(SOURCES_DONE, timeout=90)
    page.eval("window.scrollTo(0, 0)")
    keep(page, "ui-query-link")
    assert "ProDiff needs only 2 iterations" in page.text("#scholia-chat")
    assert page.eval("document.querySelectorAll('#scholia-sources .scholia-source').length") == 3
    assert page.eval("document.querySelector('#scholia-question textarea').value") == ""


def test_markup_in_a_question_or_an_abstract_is_shown_as_text_and_never_runs(
    page: Page, base_url: str
) -> None:
    ask(page, base_url, f"{QUESTION_ATTACK} {ZEBRA_Q}")
    keep(page, "ui-xss")
    assert page.eval("document.title") == "Scholia"  # no onerror/script changed it
    chat, sources = page.text("#scholia-chat"), page.text("#scholia-sources")
    assert QUESTION_ATTACK in chat  # the question, verbatim, as text
    assert "97 percent accuracy" in chat and ABSTRACT_ATTACK in chat  # quoted from the abstract
    assert TITLE_ATTACK in sources and ABSTRACT_ATTACK in sources
    injected = "document.querySelectorAll('img[src=\"x\"], #scholia-chat script, #scholia-sources script').length"
    assert page.eval(injected) == 0


QUOKKA = {
    "id": "quokkanet",
    "title": "QuokkaNet: Counting Quokkas from Drone Images",
    "abstract": "Quokkas live on Rottnest Island. QuokkaNet counted 12,400 quokkas on Rottnest "
    "Island from drone images, with a counting error below three percent. It needs one GPU.",
}
QUOKKA_Q = "How many quokkas did QuokkaNet count on Rottnest Island?"
LIBRARY_READY = "document.querySelector('#scholia-library')?.innerText.includes('ingested')"
PAGE_READY = "document.querySelector('#scholia-examples')?.innerText.includes('What')"


def open_tab(page: Page, label: str) -> None:
    page.eval(
        "[...document.querySelectorAll('button[role=tab]')]"
        f".find(b => b.innerText.trim() === {json.dumps(label)}).click()"
    )


def test_markup_in_the_library_is_shown_as_text_and_never_runs(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/ui/")
    page.wait_for(PAGE_READY)
    open_tab(page, "Library")  # a tab's content is drawn when it is first shown
    page.wait_for(LIBRARY_READY)
    listing = keep(page, "ui-library")
    assert TITLE_ATTACK in listing and "papers · " in page.text("#scholia-library-head")
    # The paper's chunks (its abstract, with the attack) in the paper panel, via its link.
    hostile = page.eval(
        "[...document.querySelectorAll('#scholia-library .scholia-paper')]"
        ".find(p => p.innerText.includes('ZebraNet')).querySelector('a').getAttribute('href')"
    )
    page.goto(f"{base_url}/ui/{hostile}")
    page.wait_for("document.querySelector('#scholia-paper')?.innerText.includes('97 percent')")
    keep(page, "ui-library-xss")
    assert ABSTRACT_ATTACK in page.text("#scholia-paper") and TITLE_ATTACK in page.text(
        "#scholia-paper"
    )
    assert page.eval("document.title") == "Scholia"
    injected = (
        "document.querySelectorAll('#scholia-library img, #scholia-library script, "
        "#scholia-paper img, #scholia-paper script').length"
    )
    assert page.eval(injected) == 0


@pytest.fixture
def fresh_url(tmp_path: Path, embedder: Embedder) -> Iterator[str]:
    """An app over two real papers, which the test adds to."""
    real = [item for item in read_papers(BUNDLED_CORPUS) if isinstance(item, Paper)][:2]
    corpus = tmp_path / "papers.jsonl"
    corpus.write_text(
        "".join(json.dumps({"title": p.title, "abstract": p.abstract}) + "\n" for p in real)
    )
    settings = Settings(data_dir=tmp_path / "data")
    run_ingest(settings, [corpus], embedder=embedder, log=lambda _: None)
    app = create_app(settings, build_services(settings, llm=FakeLLM(), embedder=embedder))
    with serve(app) as url:
        yield url


def test_an_uploaded_paper_answers_questions_without_a_restart(
    fresh_url: str, page: Page, tmp_path: Path
) -> None:
    upload = tmp_path / "new-papers.jsonl"
    upload.write_text(json.dumps(QUOKKA) + "\n{broken\n")
    page.goto(f"{fresh_url}/ui/")
    page.wait_for(PAGE_READY)
    open_tab(page, "Library")
    page.wait_for(LIBRARY_READY)
    page.set_files("#scholia-upload input[type=file]", [upload])
    page.wait_for("document.querySelector('#scholia-upload')?.innerText.includes('new-papers')")
    page.click("#scholia-add")
    page.wait_for("document.querySelector('#scholia-job')?.innerText.includes('done')", timeout=90)
    page.wait_for("document.querySelector('#scholia-library')?.innerText.includes('QuokkaNet')")
    job = page.text("#scholia-job")
    keep(page, "ui-library-upload")
    assert "added 1" in job and "line 2: invalid JSON" in job
    assert "3 papers" in page.text("#scholia-library-head")

    open_tab(page, "Ask")
    page.type("#scholia-question textarea", QUOKKA_Q)
    page.click("#scholia-ask")
    page.wait_for(SOURCES_DONE, timeout=90)
    assert "12,400" in page.text("#scholia-chat") and "QuokkaNet" in page.text("#scholia-sources")

    # "ask about this paper": the question is scoped to it, the note says so.
    page.goto(f"{fresh_url}/ui/?paper=quokkanet&ask=1")
    page.wait_for("document.querySelector('#scholia-scope')?.innerText.includes('QuokkaNet')")
    page.type("#scholia-question textarea", "What does it need?")
    page.click("#scholia-ask")
    page.wait_for("document.querySelector('#scholia-sources .scholia-source')", timeout=90)
    keep(page, "ui-library-scoped")
    assert page.eval("document.querySelectorAll('#scholia-sources .scholia-source').length") == 1
    assert "QuokkaNet" in page.text("#scholia-sources")
