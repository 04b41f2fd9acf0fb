"""The Gradio chat UI, mounted in the FastAPI app at /ui; it calls the same Assistant as /ask.

* Answers stream in token by token (the draft), then are replaced by the verified answer,
  whose [n] markers link to source n in the Sources panel (title, score, passage; cited marked).
* Every text that reaches the page (question, answer, title, abstract) is escaped: HTML
  special characters and Markdown/LaTeX syntax become character references, so it shows as
  text and never becomes markup, links, images or script.
* `/ui/?q=<question>` (optionally `&k=<top-k>`) fills the question box and asks it on load:
  a link that opens Scholia on an answer.
* The Library tab (assistant/ui_library.py) lists, searches, adds and removes papers; "ask
  about this paper" scopes the Ask tab's questions to one paper (/ask's `filters`).
* With an API key set, the UI has a login page: any user name, the API key as password.
* Program access: `gradio_client.Client(url + "/ui/").predict(question, history, top_k,
  api_name="/ask")` returns (chat history, "", sources HTML).
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
from fastapi import FastAPI

from assistant.api.errors import unavailable_status
from assistant.api.middleware import check_ui_password
from assistant.pipeline import AnswerUnavailableError, Assistant
from assistant.schemas import AskRequest, AskResponse, EvidenceSentence, Message, Source
from assistant.stream import FinalEvent, SourcesEvent, TokenEvent, stream_answer
from assistant.ui_library import LIBRARY_CSS, Scope, library_layout, wire_library
from ingest.store import IndexMismatchError, StoreUnavailableError

log = logging.getLogger("scholia.ui")

CITATION = re.compile(r"\[(\d+)\]")
# Characters Markdown, Gradio's LaTeX delimiters or HTML could read as syntax.
SYNTAX = str.maketrans({char: f"&#{ord(char)};" for char in "\\`*_{}[]()#+-.!|~$<>&\"'="})
WARNING = "⚠"
MAX_HISTORY_TURNS = 10
UI_CONCURRENCY = 16

CSS = """
.gradio-container { max-width: 1280px !important; margin: 0 auto !important; }
#scholia-header h1 { margin: 0; font-size: 1.7rem; letter-spacing: -0.01em; }
#scholia-header p { margin: 0.2rem 0 0; color: var(--body-text-color-subdued); }
#scholia-ask { min-width: 6rem; }
.scholia-heading { margin: 0 0 0.5rem; font-size: 1.05rem; }
.scholia-panel { display: flex; flex-direction: column; gap: 0.6rem;
  max-height: 700px; overflow-y: auto; padding-right: 0.2rem; }
.scholia-panel-head { font-size: 0.85rem; color: var(--body-text-color-subdued); }
.scholia-empty { color: var(--body-text-color-subdued); font-style: italic; }
.scholia-source { border: 1px solid var(--border-color-primary); border-radius: 10px;
  padding: 0.6rem 0.8rem; background: var(--background-fill-primary); scroll-margin-top: 1rem; }
.scholia-source.cited { border-left: 4px solid var(--color-accent); }
.scholia-source:target { box-shadow: 0 0 0 3px var(--color-accent-soft); }
.scholia-source h4 { margin: 0 0 0.25rem; font-size: 0.95rem; line-height: 1.3; }
.scholia-meta { display: flex; gap: 0.5rem; align-items: center; font-size: 0.78rem;
  color: var(--body-text-color-subdued); margin-bottom: 0.35rem; }
.scholia-badge { border-radius: 999px; padding: 0.05rem 0.5rem; font-weight: 600;
  background: var(--background-fill-secondary); }
.scholia-badge.cited { background: var(--color-accent); color: white; }
.scholia-passage { margin: 0; font-size: 0.85rem; line-height: 1.45; max-height: 9.5em;
  overflow-y: auto; }
.scholia-cite { text-decoration: none; font-weight: 600; }
mark.scholia-evidence { background: var(--color-accent-soft); color: inherit; padding: 0 0.1em; }
.scholia-note { color: var(--body-text-color-subdued); }
"""


def escape_text(text: str) -> str:
    """Plain text that the chat's Markdown/HTML renderer shows verbatim."""
    return text.translate(SYNTAX)


def highlight(text: str, sentences: list[str]) -> str:
    """`text` escaped, with each of `sentences` in it marked: the evidence the answer used."""
    marked = html.escape(text)
    for sentence in sentences:
        quoted = html.escape(sentence.strip())
        if quoted and quoted in marked:
            marked = marked.replace(quoted, f"<mark class='scholia-evidence'>{quoted}</mark>", 1)
    return marked


def render_sources(
    sources: list[Source], pending: bool = False, evidence: list[EvidenceSentence] | None = None
) -> str:
    heading = "<h3 class='scholia-heading'>Sources</h3>"
    if not sources:
        return (
            heading + "<div class='scholia-panel'><p class='scholia-empty'>No sources yet: "
            "ask a question, and the papers the answer draws on appear here.</p></div>"
        )
    cited = sum(source.cited for source in sources)
    head = (
        f"{len(sources)} sources retrieved · checking which ones the answer cites…"
        if pending
        else f"{len(sources)} sources retrieved · {cited} cited"
    )
    items = [f"<div class='scholia-panel-head'>{head}</div>"]
    used: dict[int, list[str]] = {}
    for sentence in evidence or []:
        used.setdefault(sentence.rank, []).append(sentence.text)
    for source in sources:
        badge = (
            "<span class='scholia-badge cited'>★ cited</span>"
            if source.cited
            else "<span class='scholia-badge'>retrieved</span>"
        )
        published = source.metadata.get("published")
        extra = f"<span>{html.escape(str(published))}</span>" if published else ""
        items.append(
            f"<div class='scholia-source{' cited' if source.cited else ''}'"
            f" id='source-{source.rank}'>"
            f"<h4>[{source.rank}] {html.escape(source.title)}</h4>"
            f"<div class='scholia-meta'>{badge}<span>score {source.score:.4f}</span>{extra}</div>"
            f"<p class='scholia-passage'>{highlight(source.text, used.get(source.rank, []))}</p>"
            "</div>"
        )
    return heading + "<div class='scholia-panel'>" + "".join(items) + "</div>"


def render_answer(response: AskResponse) -> str:
    """The answer as escaped text whose [n] markers link to source n in the panel."""
    titles = {source.rank: source.title for source in response.sources}
    parts: list[str] = []
    position = 0
    for match in CITATION.finditer(response.answer):
        parts.append(escape_text(response.answer[position : match.start()]))
        rank = int(match.group(1))
        marker = f"&#91;{rank}&#93;"
        if rank in titles:
            title = escape_text(f"Source {rank}: {titles[rank]}")
            marker = f'<a class="scholia-cite" href="#source-{rank}" title="{title}">{marker}</a>'
        parts.append(marker)
        position = match.end()
    parts.append(escape_text(response.answer[position:]))
    text = "".join(parts)
    if response.unsupported and not response.declined:
        count = len(response.unsupported)
        text += (
            f"\n\n<small class='scholia-note'>{count} statement{'s' if count > 1 else ''} of the "
            "draft removed: the sources did not support "
            f"{'them' if count > 1 else 'it'}.</small>"
        )
    return text


def question_for(title: str) -> str:
    name, colon, _ = title.partition(":")
    if colon and 0 < len(name.split()) <= 3:
        return f"What is {name.strip()} and what problem does it solve?"
    return f"What does the paper “{title.strip()}” propose?"


def example_questions(app: FastAPI, count: int = 4) -> list[str]:
    """Questions about papers in the index (evenly spread over it), computed once."""
    cached: list[str] | None = getattr(app.state, "ui_examples", None)
    if cached is not None:
        return cached
    try:
        store = app.state.services.store
        ids = sorted(store.paper_states())
        picked = ids[:: max(1, len(ids) // count)][:count]
        papers = store.papers(picked)
        questions = [question_for(papers[paper][0]) for paper in picked if paper in papers]
    except Exception:  # the index is down: no examples, the chat still says why
        log.exception("could not draw example questions from the index")
        return []
    app.state.ui_examples = questions
    return questions


def history_of(chat: list[dict[str, Any]]) -> list[Message]:
    past = []
    for turn in chat:
        role, text = turn.get("role"), _text_of(turn.get("content", ""))
        if role in {"user", "assistant"} and text.strip() and not text.startswith(WARNING):
            past.append(Message(role=role, content=text[:20_000]))
    return past[-MAX_HISTORY_TURNS:]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        content = re.sub(r"<small class='scholia-note'>.*?</small>", "", content, flags=re.S)
        return html.unescape(re.sub(r"<[^>]+>", "", content)).strip()
    if isinstance(content, list):
        return " ".join(
            _text_of(part.get("text", "")) for part in content if isinstance(part, dict)
        )
    if isinstance(content, dict):
        return _text_of(content.get("text", ""))
    return str(content)


def failure_message(error: Exception) -> str:
    if isinstance(error, AnswerUnavailableError):
        what = (
            "did not answer in time"
            if unavailable_status(error) == 504
            else "is not answering right now"
        )
        found = " The papers the search found are listed under Sources." if error.sources else ""
        return (
            f"{WARNING} The language model {what}, so no answer could be written.{found}"
            f"\n\n<small class='scholia-note'>{escape_text(str(error))}</small>"
        )
    if isinstance(error, StoreUnavailableError | IndexMismatchError):
        return f"{WARNING} The paper index is unavailable: {escape_text(str(error))}"
    if isinstance(error, ValueError):
        return f"{WARNING} {escape_text(str(error))}"
    return f"{WARNING} Something went wrong ({type(error).__name__}); please try again."


AnswerHandler = Callable[
    [str, list[dict[str, Any]] | None, float, str | None], AsyncIterator[tuple[Any, ...]]
]


@dataclass(frozen=True)
class _Page:
    """The page's components that the events read or write."""

    chat: gr.Chatbot
    question: gr.Textbox
    send: gr.Button
    examples: gr.Dataset
    top_k: gr.Slider
    clear: gr.Button
    sources: gr.HTML
    scope: Scope


def build_ui(app: FastAPI) -> gr.Blocks:
    default_k = app.state.settings.retrieval.top_k if hasattr(app.state, "settings") else 5
    with gr.Blocks(title="Scholia") as demo:
        gr.HTML(
            "<h1>Scholia</h1><p>Ask the paper collection. Every claim cites its paper; "
            "sentences the sources do not support are removed.</p>",
            elem_id="scholia-header",
        )
        with gr.Tabs(selected="ask") as tabs:
            with gr.Tab("Ask", id="ask", elem_id="scholia-tab-ask"):
                page = _layout(default_k)
            with gr.Tab("Library", id="library", elem_id="scholia-tab-library"):
                library = library_layout()
        _wire(demo, page, _answer_handler(app), _load_handler(app))
        wire_library(demo, tabs, library, page.scope, app)
    return demo


def _answer_handler(app: FastAPI) -> AnswerHandler:
    """The chat's answer function: (chat, question box, sources panel) after each step."""

    def assistant() -> Assistant:
        value: Assistant = app.state.services.assistant
        return value

    async def answer(
        question: str, chat: list[dict[str, Any]] | None, top_k: float, paper: str | None = None
    ) -> AsyncIterator[tuple[Any, Any, Any]]:
        chat = list(chat or [])
        question = (question or "").strip()[:4000]
        if not question:
            yield gr.skip(), gr.skip(), gr.skip()
            return
        past = history_of(chat)
        chat.append({"role": "user", "content": escape_text(question)})
        chat.append({"role": "assistant", "content": "_Searching the papers…_"})
        yield chat, "", gr.skip()
        panel: Any = gr.skip()
        try:
            scope = {"paper_id": paper} if paper else None
            request = AskRequest(question=question, top_k=int(top_k), history=past, filters=scope)
            prepared = await assistant().prepare(request)
            draft = ""
            async for event in stream_answer(assistant(), prepared):
                if isinstance(event, SourcesEvent):
                    panel = render_sources(event.sources, pending=True)
                    chat[-1]["content"] = "_Writing the answer…_"
                elif isinstance(event, TokenEvent):
                    draft += event.text
                    chat[-1]["content"] = escape_text(draft) + " ▍"
                elif isinstance(event, FinalEvent):
                    app.state.metrics.observe_answer(event.response, "ui")
                    chat[-1]["content"] = render_answer(event.response)
                    panel = render_sources(event.response.sources, evidence=event.response.evidence)
                yield chat, "", panel
        except Exception as error:
            if not isinstance(error, AnswerUnavailableError | StoreUnavailableError | ValueError):
                log.exception("UI answer failed")
            chat[-1]["content"] = failure_message(error)
            if isinstance(error, AnswerUnavailableError):
                panel = render_sources(error.sources)
            yield chat, "", panel

    return answer


def _load_handler(app: FastAPI) -> Callable[[gr.Request], tuple[Any, Any, Any]]:
    """On page load: the question and top-k from `?q=…&k=…`, and the example questions."""

    def on_load(request: gr.Request) -> tuple[Any, Any, Any]:
        params = request.query_params if request else {}
        question = str(params.get("q", ""))[:4000]
        top_k: Any = gr.skip()
        if str(params.get("k", "")).isdigit():
            top_k = min(20, max(1, int(str(params.get("k")))))
        samples = [[text] for text in example_questions(app)]
        return question or gr.skip(), gr.Dataset(samples=samples), top_k

    return on_load


def _layout(default_k: int) -> _Page:
    """The Ask tab: the conversation and question on the left, the sources on the right."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            chat = gr.Chatbot(
                label="Conversation",
                height=440,
                elem_id="scholia-chat",
                sanitize_html=True,
                allow_tags=False,
                feedback_options=None,
                buttons=["copy"],
                latex_delimiters=[],
                placeholder="Answers appear here, with [n] links to their sources.",
            )
            with gr.Row(equal_height=True):
                question = gr.Textbox(
                    show_label=False,
                    placeholder="Ask about the papers… (follow-up questions use the conversation)",
                    max_length=4000,
                    scale=6,
                    elem_id="scholia-question",
                    autofocus=True,
                )
                send = gr.Button("Ask", variant="primary", scale=1, elem_id="scholia-ask")
            examples = gr.Dataset(
                label="Example questions from the collection",
                components=[question],
                samples=[],
                samples_per_page=4,
                elem_id="scholia-examples",
            )
            with gr.Row(equal_height=True):
                top_k = gr.Slider(
                    1, 20, value=default_k, step=1, label="Sources to retrieve (top-k)", scale=3
                )
                clear = gr.Button("New conversation", variant="secondary", scale=1)
            with gr.Row(equal_height=True):
                note = gr.HTML("", elem_id="scholia-scope")
                unscope = gr.Button("Ask about all papers", size="sm", visible=False, scale=0)
        with gr.Column(scale=2):
            sources = gr.HTML(render_sources([]), elem_id="scholia-sources")
    scope = Scope(gr.State(None), note, unscope)
    return _Page(chat, question, send, examples, top_k, clear, sources, scope)


def _wire(
    demo: gr.Blocks,
    page: _Page,
    answer: AnswerHandler,
    on_load: Callable[[gr.Request], tuple[Any, Any, Any]],
) -> None:
    """Ask on the button (the API's "/ask"), on Enter, on an example and on a `?q=` link."""
    outputs = [page.chat, page.question, page.sources]
    inputs = [page.question, page.chat, page.top_k, page.scope.paper]
    page.send.click(answer, inputs, outputs, api_name="ask", concurrency_limit=UI_CONCURRENCY)
    page.question.submit(
        answer, inputs, outputs, api_visibility="private", concurrency_limit=UI_CONCURRENCY
    )
    page.examples.click(
        lambda sample: sample[0], page.examples, page.question, api_visibility="private"
    ).then(answer, inputs, outputs, api_visibility="private", concurrency_limit=UI_CONCURRENCY)
    page.clear.click(lambda: ([], "", render_sources([])), None, outputs, api_visibility="private")
    demo.load(
        on_load, None, [page.question, page.examples, page.top_k], api_visibility="private"
    ).then(answer, inputs, outputs, api_visibility="private", concurrency_limit=UI_CONCURRENCY)


def mount_ui(app: FastAPI, api_key: str | None = None) -> None:
    settings = getattr(app.state, "settings", None)
    gr.mount_gradio_app(
        app,
        build_ui(app),
        path="/ui",
        footer_links=["api"],
        run_history=False,
        auth=check_ui_password(api_key) if api_key else None,
        auth_message="Scholia is protected by an API key: log in with any user name and the key as password.",
        theme=gr.themes.Soft(
            primary_hue="indigo",
            neutral_hue="slate",
            font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "DejaVu Sans", "sans-serif"],
        ),
        css=CSS + LIBRARY_CSS,
        max_file_size=settings.server.max_upload_bytes if settings is not None else None,
    )
