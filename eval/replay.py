"""Record every LLM completion of an eval run (completions.jsonl, appended as answered), and replay
a run from them with no LLM server: the whole question path runs again, and a request not in the
recording is an error, never a silent fallback. A request is keyed by a hash of all it asks but
which model answers (messages, max_tokens, temperature, schema)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from assistant.llm import LLM, ChatMessage, Completion, JsonSchema
from eval.output import append_jsonl, now, read_jsonl
from scholia.settings import LLMSettings

COMPLETIONS = "completions.jsonl"
STREAM_CHUNKS = 4


class ReplayError(RuntimeError):
    """There is no recording to replay, or it cannot be read."""


class CompletionNotRecordedError(ReplayError):
    """The run asked the LLM something the recording does not hold."""


def request_fields(messages: list[ChatMessage], **params: Any) -> dict[str, Any]:
    # No "schema" key without one: the recordings made before schemas keep their keys.
    if params.get("schema") is None:
        params.pop("schema", None)
    return {"messages": [asdict(message) for message in messages], **params}


def request_key(messages: list[ChatMessage], **params: Any) -> str:
    fields = request_fields(messages, **params)
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def recording_path(run: Path) -> Path:
    return run / COMPLETIONS if run.is_dir() else run


class RecordingLLM:
    """An LLM with every answered request appended to `path`."""

    def __init__(self, inner: LLM, path: Path, temperature: float) -> None:
        self.inner, self.model, self.path, self.temperature = inner, inner.model, path, temperature
        self._window: int | None = None
        read_jsonl(path)  # cuts a line a killed run left half-written

    def _entry(self, call: str, messages: list[ChatMessage], max_tokens: int, schema: Any) -> dict:
        params = {"max_tokens": max_tokens, "temperature": self.temperature, "schema": schema}
        key, request = request_key(messages, **params), request_fields(messages, **params)
        return {"call": call, "key": key, "request": request, "recorded_at": now()}

    async def complete(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> Completion:
        done = await self.inner.complete(messages, max_tokens, schema)
        entry = self._entry("complete", messages, max_tokens, schema)
        entry |= {"text": done.text, "prompt_tokens": done.prompt_tokens}
        entry |= {"completion_tokens": done.completion_tokens, "model": done.model}
        append_jsonl(self.path, entry)
        return done

    async def stream(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> AsyncIterator[str]:
        parts: list[str] = []
        async for chunk in self.inner.stream(messages, max_tokens, schema):
            parts.append(chunk)
            yield chunk
        # Only a stream read to its end is recorded: a cut one is not the model's answer.
        entry = self._entry("stream", messages, max_tokens, schema)
        append_jsonl(self.path, entry | {"text": "".join(parts), "model": self.model})

    async def context_window(self) -> int:
        window = await self.inner.context_window()
        if window != self._window:
            self._window = window
            append_jsonl(self.path, {"context_window": window, "model": self.model})
        return window

    async def ping(self) -> bool:
        return await self.inner.ping()


def load_recording(path: Path) -> tuple[dict[str, dict[str, Any]], int | None, str | None]:
    """Every recorded completion by key (the latest wins), the context window and the model."""
    if not path.is_file():
        raise ReplayError(
            f"{path} does not exist: record a run with `scholia eval run … --record`."
        )
    entries = read_jsonl(path)
    windows = [int(e["context_window"]) for e in entries if "context_window" in e]
    models = [e["model"] for e in entries if e.get("model")]
    completions = {str(e["key"]): e for e in entries if "key" in e}
    return completions, windows[-1] if windows else None, models[-1] if models else None


class ReplayLLM:
    """Answers from a recording. A request it does not hold goes to `live` when there is one;
    otherwise it raises, and is kept in `misses` (the answer path turns some LLM failures into
    fallbacks, so a raise alone could go unnoticed)."""

    def __init__(self, run: Path, settings: LLMSettings, live: LLM | None = None) -> None:
        self.completions, window, recorded_model = load_recording(recording_path(run))
        self.live, self.window = live, window or settings.max_model_len
        self.model = live.model if live else recorded_model or settings.model
        self.temperature = settings.temperature
        self.misses: list[str] = []

    async def complete(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> Completion:
        params = {"max_tokens": max_tokens, "temperature": self.temperature, "schema": schema}
        key = request_key(messages, **params)
        if (entry := self.completions.get(key)) is None and self.live is not None:
            return await self.live.complete(messages, max_tokens, schema)
        if entry is None:
            words = (messages[-1].content if messages else "").split()
            head = " ".join(words[:12]) + (" …" if len(words) > 12 else "")
            self.misses.append(f"no recorded completion for the request {key[:12]} “{head}”")
            raise CompletionNotRecordedError(self.misses[-1])
        return Completion(
            text=str(entry["text"]),
            prompt_tokens=int(entry.get("prompt_tokens", 0)),
            completion_tokens=int(entry.get("completion_tokens", 0)),
            model=str(entry.get("model") or self.model),
        )

    async def stream(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> AsyncIterator[str]:
        text = (await self.complete(messages, max_tokens, schema)).text
        size = max(1, -(-len(text) // STREAM_CHUNKS))
        for start in range(0, len(text), size):
            yield text[start : start + size]

    async def context_window(self) -> int:
        return await self.live.context_window() if self.live is not None else self.window

    async def ping(self) -> bool:
        return await self.live.ping() if self.live is not None else True


def run_llm(
    llm: LLM | None,
    settings: LLMSettings,
    base_url: str,
    record_to: Path | None,
    replay: Path | None,
) -> LLM | None:
    """The LLM an eval run answers with: replayed, recorded, or as given (None: the default).
    Both recorded and replayed: the replay where it has the request, the LLM otherwise."""
    if record_to is None:
        return llm if replay is None else ReplayLLM(replay, settings)
    from assistant.llm import OpenAICompatibleLLM

    live: LLM = llm or OpenAICompatibleLLM(base_url, settings)
    answering = live if replay is None else ReplayLLM(replay, settings, live)
    return RecordingLLM(answering, record_to, settings.temperature)
