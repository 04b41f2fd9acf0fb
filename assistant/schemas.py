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
    score: float = Field(
        description="Retrieval score of the paper's best chunk; higher is closer. Score fusion "
        "(the default): in (0, 1), 0.5 an average candidate; rank fusion: 1/(k + rank) summed."
    )
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


# ------------------------------------------------------------------------------ the library
class PaperSummary(BaseModel):
    id: str
    title: str
    chunks: int
    ingested_at: str | None = Field(
        description="When this version of the paper was written (ISO 8601, UTC); null if "
        "it was ingested before times were recorded."
    )
    complete: bool = Field(description="False while an ingest is writing the paper.")


class IndexInfo(BaseModel):
    embed_model: str | None
    embed_dim: int | None
    chunk_max_tokens: int | None
    chunk_overlap_tokens: int | None
    last_ingest: str | None = Field(description="When papers were last added or removed.")
    papers: int
    chunks: int


class PaperList(BaseModel):
    total: int = Field(description="Papers matching `q` (all papers without it).")
    offset: int
    limit: int
    papers: list[PaperSummary]
    index: IndexInfo


class Chunk(BaseModel):
    id: str
    index: int
    text: str


class PaperDetail(BaseModel):
    id: str
    title: str
    metadata: dict[str, Any]
    chunks: list[Chunk]
    filters: MetadataFilters = Field(
        description="/ask's (or /search's) `filters` that scope a question to this paper."
    )


class RejectedRecord(BaseModel):
    line: int
    reason: str


class IngestJob(BaseModel):
    id: str
    state: Literal["running", "done", "failed", "interrupted"]
    file: str = Field(description="The uploaded file's name.")
    papers: int = Field(description="Valid paper records in the upload.")
    to_write: int = Field(default=0, description="Papers new or changed (the rest are unchanged).")
    written: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[RejectedRecord] = Field(default_factory=list)
    error: str | None = None
    started_at: str
    finished_at: str | None = None


class UploadRejected(BaseModel):
    detail: str
    rejected: list[RejectedRecord]


class PaperRemoved(BaseModel):
    removed: str
    papers: int = Field(description="Papers left in the index.")
