"""Everything a request needs, built once per process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio

from assistant.generate import prompt_tokens
from assistant.llm import (
    LLM,
    ChatMessage,
    Completion,
    JsonSchema,
    LLMTimeoutError,
    OpenAICompatibleLLM,
)
from assistant.pipeline import Assistant
from assistant.retrieve import Retriever
from assistant.verify import Verifier
from assistant.warmup import Calibration
from ingest.embed import Embedder
from ingest.pipeline import keyword_index, open_store, wanted_manifest
from ingest.store import ChromaStore
from scholia.settings import Settings


@dataclass
class Services:
    settings: Settings
    assistant: Assistant
    store: ChromaStore
    llm: DeadlineLLM
    # What `scholia serve` chose for the vLLM it supervises (CPU, dtype, …); None otherwise.
    engine: dict[str, Any] | None = None

    def reload(self) -> None:
        """After an ingest or a removal: the next search reads the keyword index anew (Chroma
        needs nothing: the app and the ingest share one client)."""
        self.assistant.retriever.keywords.reload()


def llm_base_url(settings: Settings) -> str:
    """The configured LLM, or the vLLM server that `scholia serve` supervises."""
    return settings.llm.url or f"http://{settings.llm.host}:{settings.llm.port}/v1"


class DeadlineLLM:
    """Bounds every LLM call by `settings.llm.timeout_s` of wall time (→ LLMTimeoutError → 504).

    The OpenAI client's own timeout is per network read; a server that keeps trickling tokens,
    or a fake that hangs, is only stopped by this overall deadline. A stream gets the same
    budget for all of its tokens together.
    """

    def __init__(self, inner: LLM, timeout_s: float, *, timeout_fixed: bool = True) -> None:
        self.inner = inner
        self.model = inner.model
        self.timeout_s = timeout_s
        self.timeout_fixed = timeout_fixed
        self.calibration: Calibration | None = None

    def calibrate(
        self, calibration: Calibration, longest_prompt_tokens: int, max_tokens: int
    ) -> None:
        """Know the engine's speed: refuse what cannot finish; derive the deadline if unset."""
        self.calibration = calibration
        if not self.timeout_fixed:
            self.timeout_s = round(calibration.timeout_for(longest_prompt_tokens, max_tokens), 1)

    def _timeout(self) -> LLMTimeoutError:
        return LLMTimeoutError(f"The LLM did not answer within {self.timeout_s:g} s.")

    def _check_fits(self, messages: list[ChatMessage], max_tokens: int) -> None:
        """A request the engine cannot finish before the deadline is not sent (its engine time
        would be wasted, and on a slow CPU a huge prefill can outlast vLLM's step timeout)."""
        if self.calibration is None:
            return
        tokens = prompt_tokens(messages)
        needed = self.calibration.seconds_for(tokens, max_tokens)
        if needed > self.timeout_s:
            raise LLMTimeoutError(
                f"Not sent: a {tokens}-token prompt with up to {max_tokens} answer tokens takes "
                f"about {needed:.0f} s on this engine (measured "
                f"{self.calibration.prefill_tokens_s:.0f} prompt and "
                f"{self.calibration.decode_tokens_s:.1f} answer tokens/s), over the "
                f"{self.timeout_s:g} s deadline."
            )

    async def complete(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> Completion:
        self._check_fits(messages, max_tokens)
        try:
            with anyio.fail_after(self.timeout_s):
                return await self.inner.complete(messages, max_tokens, schema)
        except TimeoutError as error:
            raise self._timeout() from error

    async def stream(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> AsyncIterator[str]:
        self._check_fits(messages, max_tokens)
        deadline = anyio.current_time() + self.timeout_s
        chunks = self.inner.stream(messages, max_tokens, schema)
        try:
            while True:
                try:
                    # The cancel scope never spans a `yield` (unsafe in async generators).
                    with anyio.fail_after(max(deadline - anyio.current_time(), 0)):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                except TimeoutError as error:
                    raise self._timeout() from error
                yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(
                    shield=True
                ):  # close the upstream request, even if cancelled
                    await aclose()

    async def context_window(self) -> int:
        try:
            with anyio.fail_after(self.timeout_s):
                return await self.inner.context_window()
        except TimeoutError as error:
            raise self._timeout() from error

    async def ping(self) -> bool:
        with anyio.move_on_after(min(self.timeout_s, 10.0)):
            return await self.inner.ping()
        return False


def build_services(
    settings: Settings, llm: LLM | None = None, embedder: Embedder | None = None
) -> Services:
    embedder = embedder or Embedder.of(settings.embedding)
    store = open_store(settings)
    store.check_manifest(wanted_manifest(settings, embedder))
    deadline_llm = DeadlineLLM(
        llm or OpenAICompatibleLLM(llm_base_url(settings), settings.llm),
        settings.llm.deadline_s,
        timeout_fixed=settings.llm.timeout_s is not None,
    )
    retriever = Retriever(store, keyword_index(settings), embedder, settings.retrieval)
    verifier = Verifier(embedder, settings.answer)
    return Services(
        settings, Assistant(retriever, deadline_llm, verifier, settings), store, deadline_llm
    )
