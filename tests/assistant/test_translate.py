import asyncio

import pytest

from assistant.translate import in_question_language, language_of
from assistant.verify import Verdict
from tests.fakes import FakeLLM

ENGLISH = Verdict(
    "Experiments on our Waymo benchmark show that MV-JAR improves 3D detection by 6.3% [1].",
    [1],
    [],
    False,
)
FRENCH_QUESTION = "Sur quel jeu de données MV-JAR propose-t-il son nouveau benchmark ?"


def _translate(
    verdict: Verdict, question: str, llm: FakeLLM, max_tokens: int
) -> tuple[Verdict, int, int]:
    return asyncio.run(in_question_language(verdict, question, llm, max_tokens))


@pytest.mark.parametrize(
    ("text", "language"),
    [
        (FRENCH_QUESTION, "French"),
        ("¿En más de cuántas tareas obtiene mPLUG-2 resultados de estado del arte?", "Spanish"),
        ("Auf welchen Datensätzen wurde BD-KD experimentell evaluiert?", "German"),
        ("MKOR 在 64 个 GPU 上最多快多少倍？", "Chinese"),
        ("What FID does PFGM++ get on FFHQ?", "English"),
        ("grokking", "English"),
        (ENGLISH.answer, "English"),
    ],
)
def test_language_of(text: str, language: str) -> None:
    assert language_of(text) == language


def test_an_english_answer_to_a_french_question_is_translated() -> None:
    french = (
        "Les expériences sur notre benchmark Waymo montrent que MV-JAR améliore la détection "
        "3D de 6.3% [1]."
    )
    llm = FakeLLM(reply=french)
    verdict, prompt_tokens, completion_tokens = _translate(ENGLISH, FRENCH_QUESTION, llm, 200)
    assert verdict.answer == french and verdict.citations == [1]
    assert prompt_tokens > 0 and completion_tokens > 0
    assert "French" in llm.calls[0][0].content and ENGLISH.answer in llm.calls[0][1].content


@pytest.mark.parametrize(
    "translation",
    [
        "Les expériences montrent que MV-JAR améliore la détection 3D de 6% [1].",  # figure lost
        "Les expériences sur Waymo montrent que MV-JAR améliore la détection de 6.3%.",  # [1]
        "Les expériences sur notre benchmark montrent une amélioration de 6.3% [1].",  # names
        ENGLISH.answer,  # not translated at all
    ],
)
def test_a_translation_that_loses_a_fact_is_not_used(translation: str) -> None:
    verdict, _, _ = _translate(ENGLISH, FRENCH_QUESTION, FakeLLM(reply=translation), 200)
    assert verdict == ENGLISH


def test_no_translation_when_not_needed_or_not_possible() -> None:
    llm = FakeLLM(reply="unused")
    assert _translate(ENGLISH, "What does MV-JAR improve?", llm, 200)[0] == ENGLISH
    declined = Verdict("The collection does not say.", [], [], True)
    assert _translate(declined, FRENCH_QUESTION, llm, 200)[0] == declined
    assert llm.calls == []
    llm.down = True  # the LLM failing costs the translation, never the verified answer
    assert _translate(ENGLISH, FRENCH_QUESTION, llm, 200)[0] == ENGLISH
