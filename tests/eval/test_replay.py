from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import openai
import pytest
from typer.testing import CliRunner

from assistant.llm import ChatMessage, OpenAICompatibleLLM
from eval.cli import eval_app
from eval.replay import (
    COMPLETIONS,
    CompletionNotRecordedError,
    ReplayError,
    ReplayLLM,
    load_recording,
    request_key,
)
from eval.runner import RESULTS, RunConfigError, RunOptions, load_results, run_suite
from eval.suite import Question, Suite, load_suite, select
from ingest.embed import Embedder
from scholia.settings import LLMSettings, Settings
from tests.eval.fake_openai import fake_openai
from tests.fakes import FakeLLM

MESSAGES = [ChatMessage("system", "Be brief."), ChatMessage("user", "What is attention?")]


@pytest.fixture(scope="module")
def dev() -> Suite:
    return load_suite("dev")


@pytest.fixture(scope="module")
def five(dev: Suite) -> list[Question]:
    return select(dev.questions, 5, stratify=True)


def run(
    suite: Suite, questions: list[Question], settings: Settings, out: Path, **kwargs: Any
) -> dict[str, Any]:
    options = kwargs.pop("options", None) or RunOptions(progress=False)
    return asyncio.run(
        run_suite(suite, questions, settings, out, options, log=lambda _: None, **kwargs)
    )


def other_runs_recording(tmp_path: Path) -> Path:
    """A recording of another run: the server's window, none of these questions' requests."""
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    (recorded / COMPLETIONS).write_text('{"context_window": 4096, "model": "fake-llm"}\n')
    return recorded


def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a replay must not create an LLM client")

    monkeypatch.setattr(openai.AsyncOpenAI, "__init__", refuse)


def test_key_covers_messages_and_every_parameter_but_the_model() -> None:
    key = request_key(MESSAGES, max_tokens=64, temperature=0.0)
    assert key == request_key(list(MESSAGES), max_tokens=64, temperature=0.0)
    other_messages = [*MESSAGES[:1], ChatMessage("user", "What is attention ?")]
    assert request_key(other_messages, max_tokens=64, temperature=0.0) != key
    assert request_key(MESSAGES, max_tokens=65, temperature=0.0) != key
    assert request_key(MESSAGES, max_tokens=64, temperature=0.7) != key
    constrained = request_key(
        MESSAGES, max_tokens=64, temperature=0.0, response_format={"type": "json_object"}
    )
    assert constrained != key


def test_stream_and_complete_record_then_replay(tmp_path: Path) -> None:
    path = tmp_path / COMPLETIONS
    settings = LLMSettings(temperature=0.0, max_model_len=2048)

    async def record() -> tuple[str, str, int]:
        recorder = ReplayLLM(None, settings, FakeLLM(reply="Attention weighs tokens [1]."), path)
        streamed = "".join([chunk async for chunk in recorder.stream(MESSAGES, 32)])
        completed = await recorder.complete(MESSAGES[:1], 16)
        return streamed, completed.text, await recorder.context_window()

    streamed, completed, window = asyncio.run(record())
    assert len(path.read_text().splitlines()) == 3

    async def replay() -> tuple[list[str], str, int, bool]:
        replayer = ReplayLLM(tmp_path, settings)
        chunks = [chunk async for chunk in replayer.stream(MESSAGES, 32)]
        completion = await replayer.complete(MESSAGES[:1], 16)
        return chunks, completion.text, await replayer.context_window(), await replayer.ping()

    chunks, replayed, replayed_window, alive = asyncio.run(replay())
    assert "".join(chunks) == streamed and 1 < len(chunks) <= 4
    assert replayed == completed and replayed_window == window == 4096 and alive

    replayer = ReplayLLM(tmp_path, settings)
    with pytest.raises(CompletionNotRecordedError, match="“What is attention\\?”"):
        asyncio.run(replayer.complete(MESSAGES, 33))
    assert replayer.misses


def test_re_recording_asks_the_llm_only_what_the_recording_lacks(tmp_path: Path) -> None:
    settings = LLMSettings(temperature=0.0, max_model_len=2048)
    old = tmp_path / "old"
    old.mkdir()

    async def first() -> None:
        recorder = ReplayLLM(None, settings, FakeLLM(reply="Recorded."), old / COMPLETIONS)
        await recorder.complete(MESSAGES, 16)

    asyncio.run(first())
    live = FakeLLM(reply="Live.")
    new = tmp_path / "new" / COMPLETIONS
    new.parent.mkdir()
    llm = ReplayLLM(old, settings, live, new)  # what `eval run --record --replay` answers with

    async def second() -> tuple[str, str]:
        kept = await llm.complete(MESSAGES, 16)  # in the old recording
        asked = await llm.complete(MESSAGES, 17)  # another request: only the live LLM has it
        return kept.text, asked.text

    assert asyncio.run(second()) == ("Recorded.", "Live.")
    assert len(live.calls) == 1
    assert len(load_recording(new)[0]) == 2  # the new recording holds both


def test_records_an_openai_server_and_replays_with_it_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = LLMSettings(model="fake-judge")
    with fake_openai("Self-attention [1].") as server:
        real = OpenAICompatibleLLM(server.url, settings)
        recorder = ReplayLLM(None, settings, real, tmp_path / COMPLETIONS)
        completion = asyncio.run(recorder.complete(MESSAGES, 50))
        asyncio.run(recorder.context_window())
    no_network(monkeypatch)
    replayer = ReplayLLM(tmp_path, LLMSettings(model="another", max_model_len=1024))
    assert replayer.model == "fake-judge"
    assert asyncio.run(replayer.complete(MESSAGES, 50)) == completion
    assert asyncio.run(replayer.context_window()) == 4096  # the server's, not the fallback


def test_recorded_run_replays_without_the_llm(
    dev: Suite,
    five: list[Question],
    indexed_settings: Settings,
    embedder: Embedder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = tmp_path / "recorded"
    recording = RunOptions(progress=False, record=True)
    llm = FakeLLM()
    run(dev, five[:1], indexed_settings, recorded, options=recording, llm=llm, embedder=embedder)
    with (recorded / COMPLETIONS).open("a") as handle:
        handle.write('{"key": "torn')  # killed mid-write; the resumed run appends after it
    three = five[:3]
    summary = run(
        dev, three, indexed_settings, recorded, options=recording, llm=llm, embedder=embedder
    )
    lines = [json.loads(line) for line in (recorded / COMPLETIONS).read_text().splitlines()]
    assert sum("key" in line for line in lines) == len(llm.calls) > 0
    assert len(load_recording(recorded / COMPLETIONS)[0]) <= len(llm.calls)

    no_network(monkeypatch)
    offline = indexed_settings.model_copy(
        update={"llm": indexed_settings.llm.model_copy(update={"url": "http://127.0.0.1:9/v1"})}
    )
    replayed = tmp_path / "replayed"
    again = run(
        dev,
        three,
        offline,
        replayed,
        options=RunOptions(progress=False, replay=recorded),
        embedder=embedder,
    )
    first, second = load_results(recorded), load_results(replayed)
    assert [first[q.id]["answer"] for q in three] == [second[q.id]["answer"] for q in three]
    assert summary["answers"] == again["answers"]

    def quality(metrics: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in metrics.items() if not k.startswith("latency.")}

    assert quality(summary["metrics"]) == quality(again["metrics"])
    saved = json.loads((replayed / "summary.json").read_text(encoding="utf-8"))
    assert saved["options"]["replay"] == str(recorded)


def test_a_request_not_recorded_stops_the_replay(
    dev: Suite,
    five: list[Question],
    indexed_settings: Settings,
    embedder: Embedder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = other_runs_recording(tmp_path)
    no_network(monkeypatch)
    replayed = tmp_path / "replayed"
    with pytest.raises(CompletionNotRecordedError) as caught:
        run(
            dev,
            five,
            indexed_settings,
            replayed,
            options=RunOptions(progress=False, replay=recorded),
            embedder=embedder,
        )
    message = str(caught.value)
    qid = message.split()[1].rstrip(":")
    assert message.startswith("question ") and qid in {q.id for q in five}
    assert "“Evidence:" in message  # the first words of the answer prompt
    assert qid not in load_results(replayed)  # a miss is not scored


def test_replay_refuses_what_cannot_work(dev: Suite, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(ReplayError, match="--record"):
        ReplayLLM(tmp_path, settings.llm)
    with pytest.raises(RunConfigError, match="another --out"):
        run(dev, [], settings, tmp_path, options=RunOptions(replay=tmp_path))
    assert not (tmp_path / RESULTS).exists()

    cli = CliRunner()
    retrieval = cli.invoke(eval_app, ["run", "dev", "--no-llm", "--replay", str(tmp_path)])
    assert retrieval.exit_code == 2 and "drop --no-llm" in retrieval.output
    assert "--replay" in cli.invoke(eval_app, ["run", "--help"]).output


def test_a_replay_may_skip_as_many_misses_as_allowed(
    dev: Suite,
    five: list[Question],
    indexed_settings: Settings,
    embedder: Embedder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = other_runs_recording(tmp_path)
    no_network(monkeypatch)
    skipped: list[str] = []
    asyncio.run(
        run_suite(
            dev,
            five,
            indexed_settings,
            tmp_path / "replayed",
            RunOptions(progress=False, replay=recorded, max_replay_misses=len(five)),
            embedder=embedder,
            log=skipped.append,
        )
    )
    missed = [line for line in skipped if line.startswith("skipped question ")]
    results = tmp_path / "replayed" / "results.jsonl"  # none when every question needed the LLM
    answered = results.read_text().splitlines() if results.exists() else []
    assert missed and len(missed) + len(answered) == len(five)  # each question: answered or skipped
