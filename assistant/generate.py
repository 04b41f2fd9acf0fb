"""Build the answer prompt from the files in prompts/, ask the LLM for a draft, and read it.

The draft is JSON, `{"claims": [{"text": "…", "evidence": ["2.3"]}]}`, constrained by the
server (vLLM structured outputs) to cite only the evidence ids the prompt gave, or
`{"not_in_sources": true}`: the sources do not answer. A server without constraints may still reply in free text: then
markers like [2.3] (or [2], all of that paper's evidence) are read from each sentence.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import prompts
from assistant.llm import LLM, ChatMessage, Completion
from assistant.pack import PackedSource, count_tokens, render_sources
from ingest.chunk import split_sentences

MAX_CLAIMS = 3
MAX_CLAIM_CHARS = 160
MARKER = re.compile(r"\[(\d+(?:\.\d+)?(?:\s*[,;]\s*\d+(?:\.\d+)?)*)\]")
# Free-text ways of saying the sources hold no answer.
DECLINE = re.compile(
    r"collection does not say|(?:sources?|evidence|papers?) (?:do|does) not (?:answer|say|mention"
    r"|contain|provide|specify)|cannot (?:find|answer|determine) (?:this|that|the answer)"
    r"|not enough information",
    re.IGNORECASE,
)
# The text of a claim, complete or still being written, in the streamed JSON.
CLAIM_TEXT = re.compile(r'"text"\s*:\s*"((?:[^"\\]|\\.)*)(")?')


@dataclass(frozen=True)
class Claim:
    text: str
    evidence: tuple[str, ...]  # evidence ids ("2.3") the claim cites
    cut: bool = False  # stopped by the length limit: its end is missing


@dataclass(frozen=True)
class Draft:
    claims: tuple[Claim, ...]
    declined: bool  # the model said the sources do not answer


def answer_messages(question: str, sources: list[PackedSource]) -> list[ChatMessage]:
    rendered = render_sources(sources)
    return [
        ChatMessage("system", prompts.load("answer_system").strip()),
        ChatMessage(
            "user", prompts.load("answer_user").format(sources=rendered, question=question)
        ),
    ]


def answer_schema(sources: list[PackedSource]) -> dict[str, Any]:
    """The JSON schema of a draft: claims that cite only the evidence ids given, or the explicit
    outcome that the sources do not answer. The claim's text comes before its ids: a small model
    asked for ids first cites before it has read what it is answering."""
    ids = [key for source in sources for key in source.evidence]
    claim = {
        "type": "object",
        "properties": {
            "text": {"type": "string", "maxLength": MAX_CLAIM_CHARS},
            "evidence": {"type": "array", "items": {"enum": ids}, "minItems": 1, "maxItems": 3},
        },
        "required": ["text", "evidence"],
        "additionalProperties": False,
    }
    answered = {
        "type": "object",
        "properties": {
            "claims": {"type": "array", "items": claim, "minItems": 1, "maxItems": MAX_CLAIMS}
        },
        "required": ["claims"],
        "additionalProperties": False,
    }
    # An empty claims list is not offered: constrained, the model closes it at once.
    not_answered = {
        "type": "object",
        "properties": {"not_in_sources": {"const": True}},
        "required": ["not_in_sources"],
        "additionalProperties": False,
    }
    return {"anyOf": [answered, not_answered]}


def read_draft(text: str, sources: list[PackedSource]) -> Draft:
    """The claims of a reply, JSON or (from an unconstrained server) free text. JSON that
    cannot be used whole (cut by the token limit, claims of the wrong shape) gives what its
    claims say so far, without ids: verification looks for their evidence itself."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("not_in_sources") is True:
        return Draft((), declined=True)
    items = data.get("claims") if isinstance(data, dict) else None
    if not isinstance(items, list):
        if text.lstrip().startswith("{"):
            said = claims_text(text)
            return Draft(
                tuple(Claim(said, (), cut=True) for said in [said] if said.strip()),
                declined=not said.strip(),
            )
        return _read_free_text(text, sources)
    claims = tuple(
        Claim(
            str(item.get("text", "")),
            _ids(item.get("evidence")),
            cut=len(str(item.get("text", ""))) >= MAX_CLAIM_CHARS,
        )
        for item in items
        if isinstance(item, dict)
    )
    return Draft(claims, declined=not claims)


def _ids(evidence: object) -> tuple[str, ...]:
    if isinstance(evidence, list):
        return tuple(str(key) for key in evidence)
    return (evidence,) if isinstance(evidence, str) else ()


def _read_free_text(text: str, sources: list[PackedSource]) -> Draft:
    by_rank = {source.rank: list(source.evidence) for source in sources}
    claims = []
    for sentence in split_sentences(text.strip()):
        if DECLINE.search(sentence):
            continue
        keys: list[str] = []
        for group in MARKER.findall(sentence):
            for marker in re.split(r"\s*[,;]\s*", group):
                keys += [marker] if "." in marker else by_rank.get(int(marker), [])
        claims.append(Claim(sentence, tuple(keys)))
    return Draft(tuple(claims), declined=not claims)


def claims_text(reply: str) -> str:
    """What the claims of a (possibly unfinished) JSON reply say so far, for streaming."""
    if not reply.lstrip().startswith("{"):
        return reply
    parts = []
    for match in CLAIM_TEXT.finditer(reply):
        raw = match.group(1)
        raw = raw[:-1] if raw.endswith("\\") and not raw.endswith("\\\\") else raw
        try:
            parts.append(json.loads(f'"{raw}"'))
        except ValueError:
            parts.append(raw)
    return " ".join(parts)


# Counted prompt tokens per chat message beyond its text (role markers).
MESSAGE_OVERHEAD_TOKENS = 8


def prompt_tokens(messages: list[ChatMessage]) -> int:
    """Tokens a chat prompt costs (tiktoken's count, plus the role markers)."""
    return sum(count_tokens(message.content) + MESSAGE_OVERHEAD_TOKENS for message in messages)


def prompt_overhead(question: str) -> int:
    """Tokens the prompt costs before any source is added."""
    return prompt_tokens(answer_messages(question, []))


async def generate(
    llm: LLM, messages: list[ChatMessage], max_tokens: int, schema: dict[str, Any] | None
) -> Completion:
    return await llm.complete(messages, max_tokens, schema)


def generate_stream(
    llm: LLM, messages: list[ChatMessage], max_tokens: int, schema: dict[str, Any] | None
) -> AsyncIterator[str]:
    return llm.stream(messages, max_tokens, schema)
