"""Turn a follow-up ("and how fast is it?") into a standalone question before retrieval."""

from __future__ import annotations

import prompts
from assistant.llm import LLM, ChatMessage, Completion
from assistant.schemas import Message

HISTORY_TURNS = 6
MAX_TURN_CHARS = 1000


async def condense(
    question: str, history: list[Message], llm: LLM
) -> tuple[str, Completion | None]:
    if not history:
        return question, None
    turns = "\n".join(
        f"{message.role}: {message.content[:MAX_TURN_CHARS]}"
        for message in history[-HISTORY_TURNS:]
    )
    prompt = prompts.load("condense").format(history=turns, question=question)
    completion = await llm.complete([ChatMessage("user", prompt)], max_tokens=96)
    lines = completion.text.strip().strip('"').splitlines()
    standalone = lines[0].strip() if lines else ""
    return (standalone or question), completion
