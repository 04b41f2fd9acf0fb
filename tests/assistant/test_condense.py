"""`condense`: a follow-up and its conversation become one standalone question."""

from __future__ import annotations

import asyncio

import pytest

from assistant.condense import HISTORY_TURNS, MAX_TURN_CHARS, condense
from assistant.llm import Completion, LLMUnavailableError
from assistant.schemas import Message
from tests.fakes import FakeLLM

HISTORY = [
    Message(role="user", content="How many iterations does ProDiff need?"),
    Message(role="assistant", content="ProDiff needs only 2 iterations [1]."),
]


def run(question: str, history: list[Message], llm: FakeLLM) -> tuple[str, Completion | None]:
    return asyncio.run(condense(question, history, llm))


def test_without_history_the_question_is_kept_and_the_llm_not_asked() -> None:
    llm = FakeLLM()
    assert run("and how fast is it?", [], llm) == ("and how fast is it?", None)
    assert llm.calls == []


def test_the_prompt_holds_the_conversation_and_the_follow_up() -> None:
    llm = FakeLLM()
    standalone, completion = run("and how fast is it?", HISTORY, llm)
    assert standalone == "and how fast is it? (about the papers discussed)"
    assert completion is not None and completion.completion_tokens > 0
    [messages] = llm.calls
    prompt = messages[-1].content
    assert "user: How many iterations does ProDiff need?" in prompt
    assert "assistant: ProDiff needs only 2 iterations [1]." in prompt
    assert "Last message: and how fast is it?\n" in prompt
    assert prompt.index("user: How many") < prompt.index("Last message:")


def test_only_the_recent_turns_are_sent_each_cut_to_length() -> None:
    llm = FakeLLM()
    history = [Message(role="user", content=f"turn {n} " + "x" * 2000) for n in range(10)]
    run("and then?", history, llm)
    prompt = llm.calls[0][-1].content
    kept = [n for n in range(10) if f"turn {n} " in prompt]
    assert kept == list(range(10 - HISTORY_TURNS, 10))
    assert "x" * (MAX_TURN_CHARS - len("turn 9 ")) in prompt
    assert "x" * MAX_TURN_CHARS not in prompt


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('"How fast is ProDiff?"', "How fast is ProDiff?"),  # quotes off
        ("How fast is ProDiff?\nIt is a TTS model.", "How fast is ProDiff?"),  # first line only
        ("  How fast is ProDiff?  ", "How fast is ProDiff?"),
        ("", "and how fast is it?"),  # nothing written: the question as asked
        ('""', "and how fast is it?"),
    ],
)
def test_the_reply_is_read_as_one_question(reply: str, expected: str) -> None:
    standalone, _ = run("and how fast is it?", HISTORY, FakeLLM(reply=reply))
    assert standalone == expected


def test_an_llm_failure_is_raised() -> None:
    llm = FakeLLM()
    llm.down = True
    with pytest.raises(LLMUnavailableError):
        run("and how fast is it?", HISTORY, llm)
