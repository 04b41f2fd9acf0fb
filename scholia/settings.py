"""The one configuration object: environment variables `SCHOLIA_*` plus an optional TOML file.

Nested sections read from `SCHOLIA_<SECTION>_<FIELD>`, e.g. `SCHOLIA_LLM_URL`, `SCHOLIA_INDEX_CHROMA_URL`.
A TOML file named by `SCHOLIA_CONFIG` (or `scholia.toml` in the data directory) supplies defaults
that environment variables override. Every environment variable Scholia reads is read here.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_CORPUS = PROJECT_ROOT / "data" / "papers.txt"
DEFAULT_LLM_TIMEOUT_S = 120.0
API_KEY_ALIAS = "SCHOLIA_API_KEY"  # another name for SCHOLIA_SERVER_API_KEY


def _default_data_dir() -> Path:
    return PROJECT_ROOT / ".scholia"


class EmbeddingSettings(BaseModel):
    model_path: Path | None = Field(
        default=None,
        description="Folder of a sentence-transformers model; default: the packaged all-MiniLM-L6-v2.",
    )
    batch_size: int = Field(default=64, ge=1, le=4096)
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where the embedder runs; auto: CUDA when torch sees a GPU."
    )


class ChunkingSettings(BaseModel):
    max_tokens: int = Field(
        default=256, ge=32, le=512, description="Embedder tokens per chunk, title included."
    )
    overlap_tokens: int = Field(default=32, ge=0, le=128)


class IndexSettings(BaseModel):
    chroma_url: str | None = Field(
        default=None, description="http://host:port of a `chroma run` server; default: embedded."
    )
    collection: str = "papers"
    keyword: Literal["local", "postgres"] = Field(
        default="local",
        description="Where keyword (BM25) search lives: local (files in the data directory, "
        "one copy per process) or postgres (PostgreSQL full-text search at `keyword_url`, one "
        "store every replica reads; docs/scaling.md).",
    )
    keyword_url: str | None = Field(
        default=None,
        description="postgresql://user@host:port/db of the keyword store when keyword=postgres.",
    )
    keyword_candidates: int = Field(
        default=20_000,
        ge=1,
        description="keyword=postgres: chunks scored per query at most, those holding the "
        "question's rarest words (docs/scaling.md §8); more is slower and closer to exact BM25.",
    )

    @model_validator(mode="after")
    def _keyword_url_given(self) -> IndexSettings:
        if self.keyword == "postgres" and not self.keyword_url:
            raise ValueError("index.keyword = postgres needs index.keyword_url (postgresql://…)")
        return self


class LLMSettings(BaseModel):
    url: str | None = Field(
        default=None,
        description="Base URL of an OpenAI-compatible server (…/v1). Unset: Scholia starts vLLM itself.",
    )
    model: str = Field(default="qwen2.5-coder-0.5b-instruct", description="Served model name.")
    api_key: SecretStr = SecretStr("not-needed")
    timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Deadline (s) for one LLM call. Unset: derived at start from the engine's "
        "measured prefill and decode rates (120 s until measured).",
    )
    max_answer_tokens: int = Field(default=200, ge=16, le=4096)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    # The supervised vLLM server (used only when `url` is unset).
    vllm_python: Path = PROJECT_ROOT / ".venv-vllm" / "bin" / "python"
    host: str = "127.0.0.1"
    port: int = Field(default=8100, ge=1, le=65535)
    max_model_len: int = Field(default=4096, ge=512)
    start_timeout_s: float = Field(default=900.0, gt=0)
    kv_cache_gib: int = Field(default=1, ge=1)
    dtype: Literal["auto", "bfloat16", "float32"] = Field(
        default="auto",
        description="Weights and activations. auto: bfloat16 where the CPU has bf16 instructions "
        "(avx512_bf16, amx_bf16), float32 elsewhere (bf16 is emulated there, ~7x slower).",
    )
    enforce_eager: bool | None = Field(
        default=None,
        description="Skip torch.compile. Unset: chosen by CPU (compiled only where it was "
        "measured faster: AVX-512 with bf16).",
    )
    omp_threads: int | None = Field(
        default=None,
        ge=1,
        description="Threads vLLM computes on. Unset: all cores but one (kept for the app).",
    )
    max_num_batched_tokens: int = Field(
        default=512,
        ge=64,
        description="Prompt tokens per engine step: longer prompts are prefilled in chunks, so "
        "no step outlasts vLLM's execute-model timeout on a slow CPU.",
    )
    warm_up: bool = Field(
        default=True,
        description="`scholia serve` runs one question's path before it opens the port, and "
        "measures the engine's speed.",
    )
    restart_max: int = Field(
        default=3,
        ge=0,
        description="Restarts of the supervised vLLM after it died unexpectedly, allowed within "
        "`restart_window_s`; past that it stays down (/ready says so). 0: never restart it.",
    )
    restart_window_s: float = Field(
        default=600.0, gt=0, description="The window (seconds) that `restart_max` counts in."
    )
    restart_backoff_s: float = Field(
        default=5.0,
        ge=0.0,
        description="Wait before restarting a dead vLLM; doubles with each restart in the window.",
    )

    @property
    def deadline_s(self) -> float:
        """The LLM deadline before the engine's speed is measured (or the one set)."""
        return self.timeout_s if self.timeout_s is not None else DEFAULT_LLM_TIMEOUT_S


class RetrievalSettings(BaseModel):
    top_k: int = Field(
        default=5,
        ge=1,
        le=20,
        description="Sources per question when the request names no number (/ask, /search, "
        "/v1, `scholia ask`/`search`, the UI's slider).",
    )
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"
    candidates: int = Field(default=30, ge=1, le=500, description="Chunks fetched per retriever.")
    fusion: Literal["rrf", "dbsf"] = Field(
        default="dbsf",
        description="How hybrid mode fuses the dense and BM25 lists: rrf (reciprocal rank) or "
        "dbsf (each list's scores standardised, then averaged: a clear BM25 winner missed by the "
        "dense list stays on top). eval/README.md has both measured.",
    )
    rrf_k: int = Field(default=60, ge=1)
    dense_weight: float = Field(default=1.0, ge=0.0)
    bm25_weight: float = Field(default=1.0, ge=0.0)


class AnswerSettings(BaseModel):
    verify: bool = Field(
        default=True, description="Drop answer sentences the sources do not support."
    )
    semantic_threshold: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description="MiniLM cosine a sentence needs with a source sentence.",
    )
    lexical_threshold: float = Field(
        default=0.7,
        ge=0.0,
        le=1.0,
        description="Share of content words found in the source, instead.",
    )
    extractive_fallback: bool = Field(
        default=True,
        description="Answer with source sentences quoted verbatim where the draft falls short: "
        "instead of declining, in place of a claim that fails verification, beside a one-paper "
        "answer, for each paper of a comparison, for the best retrieved paper when asked which "
        "paper, and after a false premise the model declined (each if close enough to the "
        "question). Off: only the model's verified claims.",
    )
    fallback_min_similarity: float = Field(
        default=0.4,
        ge=0.0,
        le=1.0,
        description="MiniLM cosine a quoted sentence needs with the question.",
    )
    compare_min_similarity: float = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        description="MiniLM cosine with the question that a compared paper's quoted sentence "
        "needs (a comparison asks about several papers at once: each matches part of it).",
    )
    description_margin: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="How much further (MiniLM cosine) from the question's description of its "
        "paper another paper's closest sentence may be than the best retrieved paper's, for a "
        "claim traced to it to count as being about the paper described.",
    )
    kind_name_window: int = Field(
        default=6,
        ge=1,
        description='How many words from a word for the kind asked ("dataset", "GPU", '
        '"model") a name may stand for it to be a name of that kind: asked which datasets, '
        "the name of a method or a baseline elsewhere in the sentence does not answer.",
    )
    answer_min_similarity: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="MiniLM cosine with the question that the evidence an answer rests on needs "
        "(its closest sentence): below it the answer is true but about something else.",
    )
    measure_min_similarity: float = Field(
        default=0.45,
        ge=0.0,
        le=1.0,
        description="A figure question asks for a measure (GPUs, batch size); a sentence whose "
        "figure is not named as that measure still answers if its MiniLM cosine with the "
        "question reaches this (the measure said in other words).",
    )
    measure_words_min_similarity: float = Field(
        default=0.45,
        ge=0.0,
        le=1.0,
        description="Such a sentence must also say what its figure measures: the MiniLM cosine "
        "of the measure asked ('pictures') with the words beside one of its figures ('images').",
    )
    decline_override_similarity: float = Field(
        default=0.55,
        ge=0.0,
        le=1.0,
        description="When the model declines (or none of its claims holds), the best source's "
        "sentence closest to the question is quoted if its MiniLM cosine reaches this.",
    )
    structured_output: bool = Field(
        default=True,
        description="Constrain the model's reply to JSON claims citing evidence ids (vLLM "
        "structured outputs); off for a server without them (free text is parsed instead).",
    )
    min_dense_score: float = Field(
        default=0.2,
        ge=-1.0,
        le=1.0,
        description="Below this best cosine, decline without asking the LLM.",
    )
    prompt_budget_tokens: int = Field(
        default=800,
        ge=256,
        le=32768,
        description="Tokens of the whole answer prompt, system prompt included: each source keeps "
        "its sentences closest to the question until they fill it (the context window, less "
        "`llm.max_answer_tokens`, caps it too). Prompt tokens set the time to first token on CPU.",
    )


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    api_key: SecretStr | None = None
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted (bytes); bigger ones get 413.",
    )
    max_upload_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024,
        description="Largest paper upload (POST /papers, the UI's Library tab) in bytes; "
        "bigger ones get 413.",
    )
    rate_limit_per_minute: float = Field(
        default=120.0,
        ge=0.0,
        description="Sustained requests per minute per client address (token bucket); 0 turns it off.",
    )
    rate_limit_burst: int = Field(
        default=30, ge=1, description="Requests a client may send at once before the limit applies."
    )
    malloc_arenas: int = Field(
        default=2,
        ge=0,
        description="glibc malloc arenas for `scholia serve` (0: glibc's default, 8 a core). "
        "Each of the ~40 request threads otherwise gets an arena of its own, whose free pages "
        "stay in the process: under load RSS then keeps creeping up.",
    )
    keep_alive_s: int = Field(
        default=75,
        ge=1,
        description="How long an idle keep-alive connection stays open (s). Longer than a "
        "client's or proxy's own idle timeout (httpx 5 s, nginx 60 s), so the client retires "
        "a connection first: a server that closes it as a request arrives resets that request.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SCHOLIA_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
    )

    data_dir: Path = Field(default_factory=_default_data_dir)
    corpus: Path = BUNDLED_CORPUS
    embedding: EmbeddingSettings = EmbeddingSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    index: IndexSettings = IndexSettings()
    llm: LLMSettings = LLMSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    answer: AnswerSettings = AnswerSettings()
    server: ServerSettings = ServerSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = config_path()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        sources.append(ApiKeyAliasSource(settings_cls))
        return tuple(sources)

    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def uploads_dir(self) -> Path:
        """Papers uploaded through the API or the UI, and their ingest jobs' records."""
        return self.data_dir / "uploads"


class ApiKeyAliasSource(PydanticBaseSettingsSource):
    """`SCHOLIA_API_KEY` sets `server.api_key` when neither SCHOLIA_SERVER_API_KEY nor the
    TOML file does (the last source: every other one wins)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        key = os.environ.get(API_KEY_ALIAS)
        return {} if key is None else {"server": {"api_key": key}}


def config_path() -> Path | None:
    explicit = os.environ.get("SCHOLIA_CONFIG")
    if explicit:
        if not Path(explicit).is_file():
            # A mistyped path must not silently run on defaults.
            raise FileNotFoundError(f"SCHOLIA_CONFIG names {explicit}, which is not a file")
        return Path(explicit)
    data_dir = Path(os.environ.get("SCHOLIA_DATA_DIR") or _default_data_dir())
    candidate = data_dir / "scholia.toml"
    return candidate if candidate.is_file() else None


@lru_cache
def get_settings() -> Settings:
    return Settings()
