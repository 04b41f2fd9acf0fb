import asyncio

import prompts
from assistant.analyse import LANGUAGES
from assistant.translate import in_question_language, translate
from assistant.verify import Verdict
from tests.fakes import FakeLLM

ENGLISH = Verdict(
    "Experiments on our Waymo benchmark show that MV-JAR improves 3D detection by 6.3% [1].",
    [1],
    [],
    False,
)


def test_an_english_question_costs_no_call() -> None:
    llm = FakeLLM()
    assert asyncio.run(in_question_language(ENGLISH, "English", llm, 100)) == (ENGLISH, 0, 0)
    assert llm.calls == []


def test_a_faithful_translation_is_kept() -> None:
    french = "Les expériences sur notre benchmark Waymo montrent que MV-JAR améliore la détection 3D de 6,3 % [1]."
    verdict, prompt_tokens, _ = asyncio.run(
        in_question_language(ENGLISH, "French", FakeLLM(reply=french), 100)
    )
    assert verdict.answer == french and verdict.citations == [1] and prompt_tokens > 0


def test_a_translation_that_loses_a_figure_marker_or_name_is_refused() -> None:
    for bad in (
        "Les expériences montrent que MV-JAR améliore la détection [1].",  # 6.3 lost
        "Les expériences sur Waymo montrent que MV-JAR améliore la détection 3D de 6,3 %.",
        "Les expériences sur Waymo montrent que le modèle améliore la détection de 6,3 % [1].",
    ):
        verdict, _, _ = asyncio.run(
            in_question_language(ENGLISH, "French", FakeLLM(reply=bad), 100)
        )
        assert verdict == ENGLISH


def test_a_name_written_in_other_case_survives() -> None:
    question = "¿En más de cuántas tareas obtiene mPLUG-2 resultados competitivos?"
    english = "On more than how many tasks does MPLUG-2 get competitive results?"
    kept = asyncio.run(translate(question, "English", FakeLLM(reply=english), 100))
    assert kept is not None and kept.text == english


def test_a_question_rendering_gets_back_the_name_it_lost() -> None:
    question = "¿En más de cuántas tareas obtiene mPLUG-2 resultados competitivos?"
    lost = "On more than how many tasks does the model get competitive results?"
    assert asyncio.run(translate(question, "English", FakeLLM(reply=lost), 100)) is None
    restored = asyncio.run(translate(question, "English", FakeLLM(reply=lost), 100, restore=True))
    assert restored is not None and restored.text == f"{lost} mPLUG-2"  # for retrieval


def test_a_failing_llm_leaves_the_english_text() -> None:
    llm = FakeLLM()
    llm.down = True
    assert asyncio.run(translate("It is 24x faster [1].", "German", llm, 100)) is None


def test_every_detected_language_has_the_whole_refusal() -> None:
    english = prompts.declines("English")
    for language in LANGUAGES:
        phrases = prompts.declines(language.title())
        assert phrases.keys() == english.keys(), language
        assert "{terms}" in phrases["missing"], language
        assert language == "ENGLISH" or phrases["decline"] != english["decline"], language
    assert prompts.declines("Klingon") == english


def test_a_refusal_costs_no_translation() -> None:
    llm = FakeLLM()
    refusal = Verdict(prompts.declines("German")["decline"], [], [], True)
    assert asyncio.run(in_question_language(refusal, "German", llm, 100)) == (refusal, 0, 0)
    assert llm.calls == []
