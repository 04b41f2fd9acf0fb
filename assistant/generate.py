"""Build the answer prompt from the files in prompts/ and ask the LLM for a draft."""

from __future__ import annotations

from collections.abc import AsyncIterator

import prompts
from assistant.llm import LLM, ChatMessage, Completion
from assistant.pack import PackedSource, count_tokens


def answer_messages(question: str, sources: list[PackedSource]) -> list[ChatMessage]:
    rendered = "\n\n".join(source.render().strip() for source in sources)
    return [
        ChatMessage("system", prompts.load("answer_system").strip()),
        ChatMessage(
            "user", prompts.load("answer_user").format(sources=rendered, question=question)
        ),
    ]


# Counted prompt tokens per chat message beyond its text (role markers).
MESSAGE_OVERHEAD_TOKENS = 8


def prompt_tokens(messages: list[ChatMessage]) -> int:
    """Tokens a chat prompt costs (tiktoken's count, plus the role markers)."""
    return sum(count_tokens(message.content) + MESSAGE_OVERHEAD_TOKENS for message in messages)


def prompt_overhead(question: str) -> int:
    """Tokens the prompt costs before any source is added."""
    return prompt_tokens(answer_messages(question, []))


async def generate(llm: LLM, messages: list[ChatMessage], max_tokens: int) -> Completion:
    return await llm.complete(messages, max_tokens=max_tokens)


def generate_stream(llm: LLM, messages: list[ChatMessage], max_tokens: int) -> AsyncIterator[str]:
    return llm.stream(messages, max_tokens=max_tokens)
