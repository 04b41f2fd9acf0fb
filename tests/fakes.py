"""A deterministic stand-in for the LLM, for fast tests only (never for "done")."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from assistant.llm import ChatMessage, Completion, LLMUnavailableError
from ingest.chunk import split_sentences

SOURCE_HEADER = re.compile(r"^\[(\d+)\] (.+)$", re.MULTILINE)
WORD = re.compile(r"\w{3,}")


class FakeLLM:
    """Answers with the source sentence that shares most words with the question, cited."""

    model = "fake-llm"

    def __init__(self, window: int = 4096, reply: str | None = None) -> None:
        self.window = window
        self.reply = reply
        self.down = False
        self.calls: list[list[ChatMessage]] = []

    def _answer(self, messages: list[ChatMessage]) -> str:
        if self.reply is not None:
            return self.reply
        prompt = messages[-1].content
        if "Standalone question:" in prompt:
            last = prompt.split("Last message:", 1)[1].split("\n", 1)[0].strip()
            return f"{last} (about the papers discussed)"
        sources_part, _, question = prompt.rpartition("Question:")
        wanted = {w.lower() for w in WORD.findall(question)}
        best, best_rank, best_overlap = "", 0, 0
        blocks = SOURCE_HEADER.split(sources_part)
        for index in range(1, len(blocks) - 2, 3):
            rank, body = int(blocks[index]), blocks[index + 2]
            for sentence in split_sentences(body):
                overlap = len(wanted & {w.lower() for w in WORD.findall(sentence)})
                if overlap > best_overlap:
                    best, best_rank, best_overlap = sentence, rank, overlap
        if best_overlap < 2:
            return "The collection does not say."
        return f"{best.rstrip('.')} [{best_rank}]."

    async def complete(self, messages: list[ChatMessage], max_tokens: int) -> Completion:
        self.calls.append(messages)
        if self.down:
            raise LLMUnavailableError("fake LLM is down")
        text = self._answer(messages)
        prompt_tokens = sum(len(m.content.split()) for m in messages)
        return Completion(text, prompt_tokens, len(text.split()), self.model)

    async def stream(self, messages: list[ChatMessage], max_tokens: int) -> AsyncIterator[str]:
        completion = await self.complete(messages, max_tokens)
        for word in re.findall(r"\S+\s*", completion.text):
            yield word

    async def context_window(self) -> int:
        if self.down:
            raise LLMUnavailableError("fake LLM is down")
        return self.window

    async def ping(self) -> bool:
        return not self.down
