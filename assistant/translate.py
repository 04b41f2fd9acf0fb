"""Answers in the question's language.

The papers are in English, so a quoted sentence is too. Asked in French, Scholia has the LLM
translate its verified answer, and keeps the translation only if every figure and citation
marker and every name survives it; otherwise (or if the LLM fails) the English answer stands.
"""

from __future__ import annotations

import re

import prompts
from assistant.llm import LLM, ChatMessage, LLMError
from assistant.verify import CITATION, Verdict, names_in, numbers_in

# Function words that give a Latin-script language away; a question needs more of its own
# language's than of English's.
FUNCTION_WORDS = {
    "English": frozenset(
        [
            "the",
            "of",
            "and",
            "to",
            "in",
            "is",
            "are",
            "was",
            "were",
            "what",
            "which",
            "how",
            "does",
            "did",
            "do",
            "for",
            "on",
            "with",
            "by",
            "from",
            "that",
            "this",
            "many",
            "much",
        ]
    ),
    "French": frozenset(
        [
            "le",
            "la",
            "les",
            "des",
            "du",
            "de",
            "un",
            "une",
            "est",
            "sont",
            "quel",
            "quelle",
            "quels",
            "quelles",
            "combien",
            "sur",
            "pour",
            "dans",
            "avec",
            "ont",
            "qui",
            "que",
            "il",
            "elle",
            "ils",
            "aux",
            "au",
        ]
    ),
    "Spanish": frozenset(
        [
            "el",
            "la",
            "los",
            "las",
            "del",
            "de",
            "un",
            "una",
            "es",
            "son",
            "qué",
            "cuál",
            "cuáles",
            "cuántos",
            "cuántas",
            "cuánto",
            "en",
            "por",
            "para",
            "con",
            "obtiene",
            "más",
            "y",
            "se",
        ]
    ),
    "German": frozenset(
        [
            "der",
            "die",
            "das",
            "den",
            "dem",
            "des",
            "und",
            "ist",
            "sind",
            "welche",
            "welchen",
            "welcher",
            "wie",
            "viele",
            "wurde",
            "wurden",
            "auf",
            "mit",
            "für",
            "ein",
            "eine",
            "im",
        ]
    ),
}
SCRIPTS = (
    ("Chinese", re.compile(r"[\u4e00-\u9fff]")),
    ("Japanese", re.compile(r"[\u3040-\u30ff]")),
    ("Korean", re.compile(r"[\uac00-\ud7af]")),
    ("Russian", re.compile(r"[\u0400-\u04ff]")),
)
WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def language_of(text: str) -> str:
    """The language `text` is most likely written in ("English" when unsure)."""
    for language, script in SCRIPTS:
        if script.search(text):
            return "Japanese" if language == "Chinese" and SCRIPTS[1][1].search(text) else language
    words = [word.casefold() for word in WORD.findall(text)]
    counts = {
        language: sum(w in vocab for w in words) for language, vocab in FUNCTION_WORDS.items()
    }
    best = max(counts, key=lambda language: counts[language])
    return best if counts[best] > counts["English"] else "English"


async def in_question_language(
    verdict: Verdict, question: str, llm: LLM, max_tokens: int
) -> tuple[Verdict, int, int]:
    """`verdict` with its answer in the question's language, and the tokens that cost."""
    language = language_of(question)
    if verdict.declined or language == "English" or language_of(verdict.answer) != "English":
        return verdict, 0, 0
    messages = [
        ChatMessage("system", prompts.load("translate_system").format(language=language).strip()),
        ChatMessage(
            "user",
            prompts.load("translate_user").format(language=language, text=verdict.answer).strip(),
        ),
    ]
    try:
        completion = await llm.complete(messages, max_tokens=max_tokens)
    except LLMError:
        return verdict, 0, 0  # the English answer is still a verified answer
    translated = " ".join(completion.text.split())
    kept = (
        translated
        and language_of(translated) != "English"
        and numbers_in(translated) >= numbers_in(verdict.answer)
        and _markers(translated) == _markers(verdict.answer)
        and set(names_in(verdict.answer)) <= set(names_in(translated))
    )
    answer = translated if kept else verdict.answer
    return (
        Verdict(answer, verdict.citations, verdict.unsupported, False),
        completion.prompt_tokens,
        completion.completion_tokens,
    )


def _markers(text: str) -> set[str]:
    return {re.sub(r"\s", "", marker) for marker in CITATION.findall(text)}
