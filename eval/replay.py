"""Record every LLM completion of an eval run, and replay a run from them without any LLM server.

`RecordingLLM` wraps the real LLM and appends each request and its completion to
`completions.jsonl` in the run folder as soon as it is answered, so a killed run keeps what it
recorded and a resumed one appends. `ReplayLLM` answers from that file: the whole question path
runs again (retrieval, packing, verification, translation…) with no network, and a request that
is not in the recording is an error, never a silent fallback.

A request is keyed by a hash of everything the model is asked except which model answers it:
the messages, `max_tokens`, the temperature, and any keyword argument a call passes (a future
`response_format`, say), so a new request parameter changes the key without touching this file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from assistant.llm import LLM, ChatMessage, Completion, JsonSchema
from scholia.settings import LLMSettings

COMPLETIONS = "completions.jsonl"
STREAM_CHUNKS = 4
PREVIEW_WORDS = 12


class ReplayError(RuntimeError):
    """There is no recording to replay, or it cannot be read."""


class CompletionNotRecordedError(ReplayError):
    """The run asked the LLM something the recording does not hold."""


def request_fields(messages: list[ChatMessage], **params: Any) -> dict[str, Any]:
    return {"messages": [asdict(message) for message in messages], **params}


def request_key(messages: list[ChatMessage], **params: Any) -> str:
    """A stable hash of the request: the same messages and parameters give the same key."""
    canonical = json.dumps(
        request_fields(messages, **params),
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def request_params(max_tokens: int, temperature: float, extra: dict[str, Any]) -> dict[str, Any]:
    """Every parameter of a request but the messages; a call's own keywords win."""
    return {"max_tokens": max_tokens, "temperature": temperature, **extra}


def preview(messages: list[ChatMessage], words: int = PREVIEW_WORDS) -> str:
    """The first words of the last message: the system prompt is the same for every question."""
    text = messages[-1].content if messages else ""
    head = text.split()
    return " ".join(head[:words]) + (" …" if len(head) > words else "")


def _schema_param(schema: JsonSchema | None) -> dict[str, Any]:
    """The schema is part of the request (a recording without one keeps its keys)."""
    return {} if schema is None else {"schema": schema}


def recording_path(run: Path) -> Path:
    return run / COMPLETIONS if run.is_dir() else run


def split_text(text: str, count: int = STREAM_CHUNKS) -> list[str]:
    size = max(1, -(-len(text) // count))
    return [text[start : start + size] for start in range(0, len(text), size)]


class RecordingLLM:
    """The real LLM, with every answered request appended to `path`."""

    def __init__(self, inner: LLM, path: Path, temperature: float) -> None:
        self.inner = inner
        self.model = inner.model
        self.path = path
        self.temperature = temperature
        self._window: int | None = None
        _drop_torn_tail(path)

    async def complete(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> Completion:
        completion = await self.inner.complete(messages, max_tokens, schema)
        params = _schema_param(schema)
        self._append(
            {
                "call": "complete",
                **self._entry(messages, request_params(max_tokens, self.temperature, params)),
                "text": completion.text,
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "model": completion.model,
            }
        )
        return completion

    async def stream(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> AsyncIterator[str]:
        parts: list[str] = []
        params = _schema_param(schema)
        async for chunk in self.inner.stream(messages, max_tokens, schema):
            parts.append(chunk)
            yield chunk
        # Only a stream read to its end is recorded: a cut one is not the model's answer.
        self._append(
            {
                "call": "stream",
                **self._entry(messages, request_params(max_tokens, self.temperature, params)),
                "text": "".join(parts),
                "model": self.model,
            }
        )

    async def context_window(self) -> int:
        window = await self.inner.context_window()
        if window != self._window:
            self._window = window
            self._append({"context_window": window, "model": self.model})
        return window

    async def ping(self) -> bool:
        return await self.inner.ping()

    def _entry(self, messages: list[ChatMessage], params: dict[str, Any]) -> dict[str, Any]:
        return {
            "key": request_key(messages, **params),
            "request": request_fields(messages, **params),
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def _append(self, entry: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


@dataclass
class Recording:
    completions: dict[str, dict[str, Any]] = field(default_factory=dict)
    window: int | None = None
    model: str | None = None


def load_recording(path: Path) -> Recording:
    """Every recorded completion by key (the latest wins); a torn last line is skipped."""
    if not path.is_file():
        raise ReplayError(
            f"{path} does not exist: record a run with `scholia eval run … --record` first."
        )
    recording = Recording()
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a run killed mid-write
            recording.model = entry.get("model") or recording.model
            if "context_window" in entry:
                recording.window = int(entry["context_window"])
            elif "key" in entry:
                recording.completions[str(entry["key"])] = entry
    return recording


class ReplayLLM:
    """Answers from a recording; a request it does not hold raises, and is kept in `misses`."""

    def __init__(self, recording: Recording, settings: LLMSettings) -> None:
        self.recording = recording
        self.model = recording.model or settings.model
        self.temperature = settings.temperature
        self.fallback_window = settings.max_model_len
        self.misses: list[str] = []

    @classmethod
    def from_run(cls, run: Path, settings: LLMSettings) -> ReplayLLM:
        return cls(load_recording(recording_path(run)), settings)

    def _lookup(self, messages: list[ChatMessage], max_tokens: int, params: dict[str, Any]) -> Any:
        key = request_key(messages, **request_params(max_tokens, self.temperature, params))
        entry = self.recording.completions.get(key)
        if entry is None:
            miss = f"no recorded completion for the request {key[:12]} “{preview(messages)}”"
            # Kept as well as raised: the answer path turns some LLM failures into fallbacks.
            self.misses.append(miss)
            raise CompletionNotRecordedError(miss)
        return entry

    async def complete(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> Completion:
        entry = self._lookup(messages, max_tokens, _schema_param(schema))
        return Completion(
            text=str(entry["text"]),
            prompt_tokens=int(entry.get("prompt_tokens", 0)),
            completion_tokens=int(entry.get("completion_tokens", 0)),
            model=str(entry.get("model") or self.model),
        )

    async def stream(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> AsyncIterator[str]:
        entry = self._lookup(messages, max_tokens, _schema_param(schema))
        for chunk in split_text(str(entry["text"])):
            yield chunk

    async def context_window(self) -> int:
        return self.recording.window or self.fallback_window

    async def ping(self) -> bool:
        return True


def run_llm(
    llm: LLM | None,
    settings: LLMSettings,
    base_url: str,
    record_to: Path | None,
    replay: Path | None,
) -> LLM | None:
    """The LLM an eval run answers with: replayed, recorded, or as given (None: the default).
    Both recorded and replayed: the replay where it has the request, the LLM otherwise."""
    if replay is not None and record_to is None:
        return ReplayLLM.from_run(replay, settings)
    if record_to is not None:
        from assistant.llm import OpenAICompatibleLLM

        real: LLM = llm or OpenAICompatibleLLM(base_url, settings)
        if replay is not None:
            real = ReusingLLM(ReplayLLM.from_run(replay, settings), real)
        return RecordingLLM(real, record_to, settings.temperature)
    return llm


class ReusingLLM:
    """A recording's completion where it has the request; the real LLM's otherwise."""

    def __init__(self, recorded: ReplayLLM, live: LLM) -> None:
        self.recorded = recorded
        self.live = live
        self.model = live.model

    async def complete(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> Completion:
        try:
            return await self.recorded.complete(messages, max_tokens, schema)
        except CompletionNotRecordedError:
            self.recorded.misses.clear()
            return await self.live.complete(messages, max_tokens, schema)

    async def stream(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> AsyncIterator[str]:
        completion = await self.complete(messages, max_tokens, schema)
        yield completion.text

    async def context_window(self) -> int:
        return await self.live.context_window()

    async def ping(self) -> bool:
        return await self.live.ping()


def _drop_torn_tail(path: Path) -> None:
    """Cut a line a killed run left half-written, so the next append starts on its own line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
