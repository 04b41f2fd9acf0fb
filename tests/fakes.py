"""A deterministic stand-in for the LLM, for fast tests only (never for "done")."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

from assistant.llm import ChatMessage, Completion, JsonSchema, LLMUnavailableError

EVIDENCE_LINE = re.compile(r"^\[(\d+\.\d+)\] (.+)$", re.MULTILINE)
WORD = re.compile(r"\w{3,}")


class FakeLLM:
    """Answers with the evidence sentence that shares most words with the question, citing its
    id: JSON claims when asked for a schema, a sentence with its marker otherwise. `reply`
    fixes the reply instead (a bad draft: a garbled figure, the question echoed, a wrong id)."""

    model = "fake-llm"

    def __init__(self, window: int = 4096, reply: str | None = None) -> None:
        self.window = window
        self.reply = reply
        self.down = False
        self.calls: list[list[ChatMessage]] = []
        self.schemas: list[JsonSchema | None] = []

    def _answer(self, messages: list[ChatMessage], schema: JsonSchema | None) -> str:
        if self.reply is not None:
            return self.reply
        prompt = messages[-1].content
        if "Standalone question:" in prompt:
            last = prompt.split("Last message:", 1)[1].split("\n", 1)[0].strip()
            return f"{last} (about the papers discussed)"
        if prompt.startswith("Translate into"):
            return prompt.split("\n\n", 1)[-1]
        evidence, _, question = prompt.rpartition("Question:")
        wanted = {w.lower() for w in WORD.findall(question)}
        best, best_key, best_overlap = "", "", 0
        for key, sentence in EVIDENCE_LINE.findall(evidence):
            overlap = len(wanted & {w.lower() for w in WORD.findall(sentence)})
            if overlap > best_overlap:
                best, best_key, best_overlap = sentence, key, overlap
        if schema is not None:
            if best_overlap < 2:
                return json.dumps({"not_in_sources": True})
            return claims((best, [best_key]))
        if best_overlap < 2:
            return "The collection does not say."
        return f"{best.rstrip('.')} [{best_key.split('.')[0]}]."

    async def complete(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> Completion:
        self.calls.append(messages)
        self.schemas.append(schema)
        if self.down:
            raise LLMUnavailableError("fake LLM is down")
        text = self._answer(messages, schema)
        prompt_tokens = sum(len(m.content.split()) for m in messages)
        return Completion(text, prompt_tokens, len(text.split()), self.model)

    async def stream(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> AsyncIterator[str]:
        completion = await self.complete(messages, max_tokens, schema)
        for word in re.findall(r"\S+\s*", completion.text):
            yield word

    async def context_window(self) -> int:
        if self.down:
            raise LLMUnavailableError("fake LLM is down")
        return self.window

    async def ping(self) -> bool:
        return not self.down


def claims(*items: tuple[str, list[str]]) -> str:
    """A JSON draft: claims as (text, evidence ids)."""
    return json.dumps({"claims": [{"text": text, "evidence": keys} for text, keys in items]})


def states(answer: str, figure: str) -> bool:
    """`answer` states `figure` as a figure: a citation marker "[2]" does not count."""
    return bool(
        re.search(rf"(?<![\w.]){re.escape(figure)}(?![\w]|\.\d)", re.sub(r"\[\d+\]", "", answer))
    )
