"""Warm the whole question path before the app says it is ready, and measure the engine.

A question's first run pays for what nothing has touched yet: the embedder's first batch, the
keyword index, the verifier, and in the engine the first prompt of a new length (kernel
selection; on a compiled engine, shapes not compiled yet). `warm_up` runs the app's own path on
a question about the collection (retrieve → pack → a short generation at the real prompt size →
verify), so the first user question costs what the second does. It also measures the engine's
prefill and decode rates, from which the LLM deadline and the "cannot finish in time" guard are
set (`Calibration`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from assistant.generate import answer_messages, prompt_tokens
from assistant.llm import LLM, MAX_LLM_TIMEOUT_S, ChatMessage
from assistant.schemas import AskRequest
from scholia.settings import Settings

log = logging.getLogger("scholia.warmup")

WARMUP_QUESTION = "What problem does the first paper of the collection address, and how?"
# Short to prefill, and long to answer: the decode rate needs DECODE_TOKENS tokens to time.
SHORT_PROMPT = "Count from one to one hundred in words, separated by commas."
DECODE_TOKENS = 10
# Deadline = SAFETY × the slowest answer the budget allows, plus a fixed allowance; bounds:
SAFETY = 2.0
FIXED_ALLOWANCE_S = 10.0
MIN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Calibration:
    """Measured engine speed: prompt tokens/s before the first answer token, tokens/s after."""

    prefill_tokens_s: float
    decode_tokens_s: float
    first_token_short_s: float
    first_token_long_s: float
    long_prompt_tokens: int
    warmup_s: float

    def seconds_for(self, prompt_tokens: int, max_tokens: int) -> float:
        """Worst-case seconds for a request: all of the prompt, then `max_tokens` tokens."""
        return prompt_tokens / self.prefill_tokens_s + max_tokens / self.decode_tokens_s

    def timeout_for(self, prompt_budget_tokens: int, max_answer_tokens: int) -> float:
        slowest = self.seconds_for(prompt_budget_tokens, max_answer_tokens)
        return min(max(SAFETY * slowest + FIXED_ALLOWANCE_S, MIN_TIMEOUT_S), MAX_LLM_TIMEOUT_S)

    def describe(self) -> dict[str, Any]:
        return {key: round(value, 3) for key, value in asdict(self).items()}


async def timed_stream(
    llm: LLM, messages: list[ChatMessage], max_tokens: int
) -> tuple[float, int, float]:
    """(seconds to the first chunk, chunks, seconds from the first chunk to the last)."""
    start = time.perf_counter()
    first = last = 0.0
    chunks = 0
    async for _ in llm.stream(messages, max_tokens):
        last = time.perf_counter()
        if chunks == 0:
            first = last
        chunks += 1
    return first - start, chunks, last - first


async def calibrate(llm: LLM, long_messages: list[ChatMessage]) -> Calibration:
    """Time a full-size prompt's first token and a short prompt's answer tokens.

    The prefill rate counts the whole time to the first token (request overhead included), so
    it errs slow: the "cannot finish in time" guard then errs on the side of sending."""
    started = time.perf_counter()
    # The system prompt is left to the engine's prefix cache, as for every question after this
    # one; the rest starts with a new line, so none of it can come from the cache.
    system, rest = long_messages[:1], [_varied(m) for m in long_messages[1:]]
    long_first, _, _ = await timed_stream(llm, system + rest, 2)
    short = [ChatMessage("user", SHORT_PROMPT)]
    short_first, chunks, decode_s = await timed_stream(llm, short, DECODE_TOKENS)
    tokens = prompt_tokens(system + rest)
    return Calibration(
        prefill_tokens_s=prompt_tokens(rest) / max(long_first, 1e-3),
        decode_tokens_s=max(chunks - 1, 1) / max(decode_s, 1e-3),
        first_token_short_s=short_first,
        first_token_long_s=long_first,
        long_prompt_tokens=tokens,
        warmup_s=time.perf_counter() - started,
    )


def _varied(message: ChatMessage) -> ChatMessage:
    """The same prompt with a different first line, so the engine's prefix cache cannot serve it."""
    return ChatMessage(message.role, f"(warm-up {time.time():.0f})\n" + message.content)


async def warm_up_path(assistant: Any) -> Calibration | None:
    """Run the question path once and measure the engine; None (logged) if the LLM fails: the
    app starts all the same, and /ready says the LLM is down."""
    from assistant.llm import LLMError
    from assistant.pipeline import AnswerUnavailableError

    try:
        prepared = await assistant.prepare(AskRequest(question=WARMUP_QUESTION))
        messages = answer_messages(prepared.question, prepared.packed)
        calibration = await calibrate(assistant.llm, messages)
    except (LLMError, AnswerUnavailableError) as error:
        log.warning("warm-up: the LLM failed (%s); answers will show whether it recovers", error)
        return None
    if prepared.packed:  # the verifier's first sentence, too
        await assistant.respond(prepared, f"{prepared.packed[0].text.split('. ')[0]}. [1]")
    return calibration


def longest_prompt_tokens(settings: Settings, context_window: int) -> int:
    """The longest answer prompt the app sends: its budget, or what the window leaves."""
    return min(
        settings.answer.prompt_budget_tokens, context_window - settings.llm.max_answer_tokens
    )


@dataclass
class StartupSteps:
    """Seconds each step of `scholia serve`'s start took, appended to `logs/startup.jsonl`
    (`scholia eval perf` reports the latest cold and warm starts from it)."""

    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] = round(time.perf_counter() - tick, 1)

    def record(self, logs_dir: Path, extra: dict[str, Any]) -> dict[str, Any]:
        entry = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            **self.seconds,
            "total_s": round(time.perf_counter() - self.started, 1),
            **extra,
        }
        logs_dir.mkdir(parents=True, exist_ok=True)
        with (logs_dir / STARTUP_LOG).open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")
        return entry


STARTUP_LOG = "startup.jsonl"
