"""The one LLM boundary: any OpenAI-compatible chat server (vLLM on CPU or GPU, or a test fake)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import openai

from scholia.settings import LLMSettings

# The HTTP client's own backstop; the real deadline is enforced around every call (DeadlineLLM).
MAX_LLM_TIMEOUT_S = 1800.0


class LLMError(RuntimeError):
    """The LLM could not produce an answer."""


class LLMUnavailableError(LLMError):
    """The server is down, refusing connections, or answering with a server error."""


class LLMTimeoutError(LLMError):
    """The server took longer than the configured timeout."""


# A JSON schema the reply must follow (vLLM structured outputs, through `response_format`).
JsonSchema = dict[str, Any]


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str


class LLM(Protocol):
    model: str

    async def complete(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> Completion: ...

    def stream(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> AsyncIterator[str]: ...

    async def context_window(self) -> int: ...

    async def ping(self) -> bool: ...


class OpenAICompatibleLLM:
    def __init__(self, base_url: str, settings: LLMSettings) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = settings.model
        self.temperature = settings.temperature
        self.fallback_window = settings.max_model_len
        self._window: int | None = None
        self.client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=settings.api_key.get_secret_value(),
            timeout=settings.timeout_s or MAX_LLM_TIMEOUT_S,
            max_retries=0,
        )

    async def complete(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> Completion:
        try:
            response = await self.client.chat.completions.create(
                model=self.model,
                messages=as_openai_messages(messages),
                max_tokens=max_tokens,
                temperature=self.temperature,
                **_constrained(schema),
            )
        except Exception as error:
            raise _translate(error) from error
        usage = response.usage
        return Completion(
            text=(response.choices[0].message.content or "").strip(),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            model=response.model or self.model,
        )

    async def stream(
        self, messages: list[ChatMessage], max_tokens: int, schema: JsonSchema | None = None
    ) -> AsyncIterator[str]:
        try:
            chunks = await self.client.chat.completions.create(
                model=self.model,
                messages=as_openai_messages(messages),
                max_tokens=max_tokens,
                temperature=self.temperature,
                stream=True,
                **_constrained(schema),
            )
            async for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except LLMError:
            raise
        except Exception as error:
            raise _translate(error) from error

    async def context_window(self) -> int:
        """`max_model_len` from the server's /v1/models (vLLM reports it); cached once known."""
        if self._window is None:
            try:
                models = await self.client.models.list()
            except Exception as error:
                raise _translate(error) from error
            for card in models.data:
                length = (card.model_extra or {}).get("max_model_len")
                if card.id == self.model and isinstance(length, int):
                    self._window = length
            if self._window is None:
                return self.fallback_window
        return self._window

    async def ping(self) -> bool:
        try:
            await self.client.with_options(timeout=5.0).models.list()
        except Exception:
            return False
        return True


def _constrained(schema: JsonSchema | None) -> dict[str, Any]:
    """The request fields that make vLLM follow `schema` (vLLM 0.32 reads `structured_outputs`
    or `response_format`; it silently ignores the old `guided_json`). The server is started
    with `disable_any_whitespace`: JSON whitespace would cost answer tokens."""
    if schema is None:
        return {}
    return {"extra_body": {"structured_outputs": {"json": schema}}}


def as_openai_messages(messages: list[ChatMessage]) -> Any:
    """The chat messages in the OpenAI API's wire form."""
    return [{"role": message.role, "content": message.content} for message in messages]


def _translate(error: Exception) -> LLMError:
    if isinstance(error, openai.APITimeoutError | httpx.TimeoutException):
        return LLMTimeoutError(f"The LLM did not answer in time: {error}")
    if isinstance(error, openai.APIConnectionError | httpx.TransportError):
        return LLMUnavailableError(f"The LLM server is unreachable: {error}")
    if isinstance(error, openai.APIStatusError):
        if error.status_code >= 500:
            return LLMUnavailableError(
                f"The LLM server failed ({error.status_code}): {error.message}"
            )
        return LLMError(
            f"The LLM server refused the request ({error.status_code}): {error.message}"
        )
    return LLMError(f"LLM call failed: {error}")
