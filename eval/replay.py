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
from eval.harness import append_jsonl, now, read_jsonl
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


async def _chunks(text: str) -> AsyncIterator[str]:
    size = max(1, -(-len(text) // STREAM_CHUNKS))
    for start in range(0, len(text), size):
        yield text[start : start + size]


class ReplayLLM:
    """Answers from the recording of `run`, else from `live`; with `record`, appends each answer
    there. A request neither can answer raises and is kept in `misses` (the answer path turns some
    LLM failures into fallbacks)."""

    def __init__(
        self,
        run: Path | None,
        settings: LLMSettings,
        live: LLM | None = None,
        record: Path | None = None,
    ) -> None:
        recording = load_recording(recording_path(run)) if run else ({}, None, None)
        self.completions, window, recorded_model = recording
        self.live, self.window, self.record = live, window or settings.max_model_len, record
        self.model = live.model if live else recorded_model or settings.model
        self.temperature = settings.temperature
        self.misses: list[str] = []
        self._window: int | None = None  # the context window last recorded
        if record is not None:
            read_jsonl(record)  # cuts a line a killed run left half-written

    def _request(self, messages: list[ChatMessage], max_tokens: int, schema: Any) -> tuple:
        """The request's key, its fields, its recorded entry (None: `live` answers it)."""
        params = {"max_tokens": max_tokens, "temperature": self.temperature, "schema": schema}
        key = request_key(messages, **params)
        if (entry := self.completions.get(key)) is None and self.live is None:
            words = (messages[-1].content if messages else "").split()
            head = " ".join(words[:12]) + (" …" if len(words) > 12 else "")
            self.misses.append(f"no recorded completion for the request {key[:12]} “{head}”")
            raise CompletionNotRecordedError(self.misses[-1])
        return key, request_fields(messages, **params), entry

    def _keep(self, call: str, key: str, request: dict[str, Any], **answer: Any) -> None:
        if self.record is not None:
            entry = {"call": call, "key": key, "request": request, "recorded_at": now()}
            append_jsonl(self.record, entry | answer)

    async def complete(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> Completion:
        key, request, entry = self._request(messages, max_tokens, schema)
        if entry is not None:
            tokens = int(entry.get("prompt_tokens", 0)), int(entry.get("completion_tokens", 0))
            done = Completion(str(entry["text"]), *tokens, str(entry.get("model") or self.model))
        elif self.live is not None:
            done = await self.live.complete(messages, max_tokens, schema)
        self._keep("complete", key, request, **asdict(done))
        return done

    async def stream(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> AsyncIterator[str]:
        key, request, entry = self._request(messages, max_tokens, schema)
        if entry is not None:
            chunks = _chunks(str(entry["text"]))
        elif self.live is not None:
            chunks = self.live.stream(messages, max_tokens, schema)
        parts: list[str] = []
        async for chunk in chunks:
            parts.append(chunk)
            yield chunk
        # Only a stream read to its end is recorded: a cut one is not the model's answer.
        self._keep("stream", key, request, text="".join(parts), model=self.model)

    async def context_window(self) -> int:
        window = await self.live.context_window() if self.live is not None else self.window
        if self.record is not None and window != self._window:
            self._window = window
            append_jsonl(self.record, {"context_window": window, "model": self.model})
        return window

    async def ping(self) -> bool:
        return await self.live.ping() if self.live is not None else True
