"""The Gradio chat UI, mounted in the FastAPI app at /ui; it calls the same Assistant as /ask."""

from __future__ import annotations

import html
import re
from typing import Any

import gradio as gr
from fastapi import FastAPI

from assistant.pipeline import AnswerUnavailableError
from assistant.schemas import AskRequest, AskResponse, Message, Source

EXAMPLES = [
    "How many iterations does ProDiff need to synthesize high-fidelity mel-spectrograms?",
    "Which paper partitions GNN layers among GPUs to cut communication?",
    "What problem does variance-corrected model averaging solve in gossip learning?",
]
CITATION = re.compile(r"\[(\d+)\]")


def render_sources(sources: list[Source]) -> str:
    if not sources:
        return "<p class='scholia-empty'>No sources yet.</p>"
    items = []
    for source in sources:
        mark = "★ cited" if source.cited else "not cited"
        items.append(
            f"<div class='scholia-source' id='source-{source.rank}'>"
            f"<p><b>[{source.rank}] {html.escape(source.title)}</b>"
            f" <small>score {source.score:.4f} · {mark}</small></p>"
            f"<p>{html.escape(source.text)}</p></div>"
        )
    return "\n".join(items)


def render_answer(response: AskResponse) -> str:
    """The answer as escaped text whose [n] markers link to their source in the panel."""
    escaped = html.escape(response.answer)
    return CITATION.sub(lambda m: f"<a href='#source-{m.group(1)}'>[{m.group(1)}]</a>", escaped)


def build_ui(app: FastAPI) -> gr.Blocks:
    async def answer(
        question: str, history: list[dict[str, Any]], top_k: float
    ) -> tuple[list[dict[str, Any]], str, str]:
        history = list(history or [])
        question = (question or "").strip()
        if not question:
            return history, "", render_sources([])
        past = [
            Message(role=turn["role"], content=_text_of(turn["content"]))
            for turn in history
            if turn.get("role") in {"user", "assistant"}
        ]
        assistant = app.state.services.assistant
        try:
            response = await assistant.ask(
                AskRequest(question=question[:4000], top_k=int(top_k), history=past[-10:])
            )
            reply, panel = render_answer(response), render_sources(response.sources)
        except AnswerUnavailableError as error:
            reply = html.escape(f"The language model is unavailable right now ({error}).")
            panel = render_sources(error.sources)
        history += [
            {"role": "user", "content": html.escape(question)},
            {"role": "assistant", "content": reply},
        ]
        return history, "", panel

    with gr.Blocks(title="Scholia") as demo:
        gr.Markdown("# Scholia\nAsk the paper collection. Every claim cites its paper.")
        with gr.Row():
            with gr.Column(scale=3):
                chat = gr.Chatbot(label="Conversation", height=480)
                question = gr.Textbox(label="Question", placeholder="Ask about the papers…")
                with gr.Row():
                    send = gr.Button("Ask", variant="primary")
                    top_k = gr.Slider(1, 20, value=5, step=1, label="Sources (top-k)")
                gr.Examples(EXAMPLES, inputs=question)
            with gr.Column(scale=2):
                gr.Markdown("### Sources")
                sources = gr.HTML(render_sources([]))
        send.click(answer, [question, chat, top_k], [chat, question, sources], api_name="ask")
        question.submit(answer, [question, chat, top_k], [chat, question, sources], api_visibility="private")
    return demo


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return re.sub(r"<[^>]+>", "", html.unescape(content))
    if isinstance(content, list):
        return " ".join(
            _text_of(part.get("text", "")) for part in content if isinstance(part, dict)
        )
    return str(content)


def mount_ui(app: FastAPI) -> None:
    gr.mount_gradio_app(app, build_ui(app), path="/ui", footer_links=["api"])
