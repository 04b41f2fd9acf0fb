"""The HTTP contract of `/ask` and `/search`. Extend it; never break it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# A metadata field name, as ingest stores them; "$…" would be read as a Chroma operator.
FilterKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][\w.\-]{0,99}$")]
MetadataFilters = dict[FilterKey, str | int | float | bool]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(max_length=20_000)


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=4000)
    top_k: int | None = Field(
        default=None,
        ge=1,
        le=20,
        description="Sources to use. Default: the server's retrieval.top_k.",
    )
    history: list[Message] = Field(default_factory=list, max_length=50)
    stream: bool = False
    filters: MetadataFilters | None = Field(
        default=None, description='Metadata equality filters, e.g. {"published": "2024"}.'
    )


class Source(BaseModel):
    rank: int
    id: str
    title: str
    text: str
    score: float
    cited: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)


class EvidenceSentence(BaseModel):
    id: str = Field(description='"2.3": the third evidence sentence of source 2.')
    rank: int
    text: str


class Timings(BaseModel):
    retrieve: float = 0.0
    generate: float = 0.0
    total: float = 0.0
    condense: float = 0.0
    verify: float = 0.0


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class AskResponse(BaseModel):
    answer: str
    declined: bool
    citations: list[int]
    sources: list[Source]
    model: str
    timings_ms: Timings
    usage: Usage
    question: str = Field(description="The standalone question that was answered.")
    unsupported: list[int] = Field(
        default_factory=list,
        description="Indices of draft-answer claims removed because the sources did not support them.",
    )
    evidence: list[EvidenceSentence] = Field(
        default_factory=list,
        description="The source sentences the answer rests on (highlighted in the UI).",
    )


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=4000)
    top_k: int | None = Field(
        default=None,
        ge=1,
        le=20,
        description="Sources to use. Default: the server's retrieval.top_k.",
    )
    filters: MetadataFilters | None = None


class SearchResponse(BaseModel):
    results: list[Source]


class ErrorResponse(BaseModel):
    detail: str
    sources: list[Source] = Field(default_factory=list)
