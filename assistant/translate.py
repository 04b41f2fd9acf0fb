"""Questions in other languages: retrieved with an English rendering, answered in their own.

The papers are in English, so the question is rendered in English for retrieval and the answer
is translated back (refusals are written out per language). A translation is kept only if every
figure, citation marker and name survives it; otherwise (or if the LLM fails) the English text
stands.
"""

from __future__ import annotations

import re
from dataclasses import replace

import prompts
from assistant.analyse import missing_names, names_in, numbers_in, without_names
from assistant.llm import LLM, ChatMessage, Completion, LLMError
from assistant.verify import Verdict

MARKER = re.compile(r"\[\d+\]")


async def translate(
    text: str, language: str, llm: LLM, max_tokens: int, restore: bool = False
) -> Completion | None:
    """`text` in `language`, or None when the LLM fails or loses a figure, marker or name; with
    `restore` (a question rendered for retrieval), what it lost is appended instead: a small
    model's rendering that drops a name still finds more English papers than the original."""
    messages = [
        ChatMessage("system", prompts.load("translate_system").format(language=language).strip()),
        ChatMessage(
            "user", prompts.load("translate_user").format(language=language, text=text).strip()
        ),
    ]
    try:
        completion = await llm.complete(messages, max_tokens)
    except LLMError:
        return None
    translated = " ".join(completion.text.split())
    lost = missing_names(names_in(text), [translated])  # "mPLUG-2" written "MPLUG-2" is not
    lost += sorted(numbers_in(without_names(text)) - numbers_in(translated, language))
    if restore and translated:
        translated, lost = " ".join([translated, *lost]), []
    faithful = translated and not lost and MARKER.findall(translated) == MARKER.findall(text)
    return replace(completion, text=translated) if faithful else None


async def in_question_language(
    verdict: Verdict, language: str, llm: LLM, max_tokens: int
) -> tuple[Verdict, int, int]:
    """`verdict` with its answer in the question's language, and the tokens that cost (a
    refusal is written in it already: `prompts/declines.toml`)."""
    if language == "English" or verdict.declined:
        return verdict, 0, 0
    completion = await translate(verdict.answer, language, llm, max_tokens)
    if completion is None:
        return verdict, 0, 0  # the English answer is still a verified answer
    return (
        replace(verdict, answer=completion.text),
        completion.prompt_tokens,
        completion.completion_tokens,
    )
