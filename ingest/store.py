"""The vector store boundary: Chroma (embedded or `chroma run` server) through LlamaIndex.

Every chunk carries its paper's content hash and chunk count, so a reader can tell a complete
paper from one a killed run left half-written, and a re-run repairs it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ingest.chunk import Chunk
from ingest.parse import Paper

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection
    from llama_index.vector_stores.chroma import ChromaVectorStore

SCHEMA_VERSION = 1
MANIFEST_PREFIX = "scholia_"
GET_PAGE = 1000  # rows per `get`; a page costs ~20 KB of memory a row (metadata included)
DELETE_PAGE = 500
DEFAULT_MAX_BATCH = 1000
LAST_INGEST_KEY = "last_ingest"


class IndexMismatchError(RuntimeError):
    """The index on disk was built with other settings than the ones in use."""


class StoreUnavailableError(RuntimeError):
    """The Chroma server, or the Postgres keyword store, cannot be reached (at connect time, or
    later: stopped, restarting)."""


@dataclass(frozen=True)
class Manifest:
    embed_model: str
    embed_dim: int
    chunk_max_tokens: int
    chunk_overlap_tokens: int
    schema_version: int = SCHEMA_VERSION

    def as_metadata(self) -> dict[str, str | int]:
        return {MANIFEST_PREFIX + key: value for key, value in self.__dict__.items()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any] | None) -> Manifest | None:
        if not metadata or MANIFEST_PREFIX + "embed_model" not in metadata:
            return None
        fields = {
            key[len(MANIFEST_PREFIX) :]: value
            for key, value in metadata.items()
            if key.startswith(MANIFEST_PREFIX)
        }
        return cls(**{key: fields[key] for key in cls.__dataclass_fields__ if key in fields})

    def differences(self, other: Manifest) -> list[str]:
        return [
            f"{key}: index has {getattr(self, key)!r}, settings give {getattr(other, key)!r}"
            for key in self.__dataclass_fields__
            if getattr(self, key) != getattr(other, key)
        ]


@dataclass(frozen=True)
class PaperState:
    """What the store holds of one paper; `complete` only if one whole version is stored."""

    content_hash: str
    expected_chunks: int
    stored_chunks: int
    max_index: int = -1
    consistent: bool = True  # every stored chunk carries the same paper hash and chunk count

    @property
    def complete(self) -> bool:
        return (
            self.consistent
            and self.stored_chunks == self.expected_chunks
            and self.max_index == self.expected_chunks - 1
        )


@dataclass(frozen=True)
class StoreScan:
    """Every paper's state plus the fingerprint of the chunk ids and hashes (as BM25 records)."""

    states: dict[str, PaperState]
    fingerprint: str
    titles: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PaperEntry:
    """One paper as the library lists it."""

    id: str
    title: str
    chunks: int
    content_hash: str
    complete: bool


@dataclass(frozen=True)
class ChunkHit:
    chunk_id: str
    paper_id: str
    title: str
    text: str
    passage: str
    score: float
    metadata: dict[str, Any]


def connect(chroma_url: str | None, chroma_dir: Path) -> Any:
    """A Chroma client: HTTP when a server URL is configured, else embedded on disk."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    if chroma_url:
        parsed = urlparse(chroma_url)
        if parsed.scheme not in {"http", "https"} or not parsed.hostname:
            raise ValueError(f"chroma_url must look like http://host:port, got {chroma_url!r}")
        try:
            return chromadb.HttpClient(
                host=parsed.hostname,
                port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                ssl=parsed.scheme == "https",
                settings=chroma_settings,
            )
        except Exception as error:  # chromadb raises bare exceptions on connection failure
            raise StoreUnavailableError(
                f"Chroma server at {chroma_url} unreachable: {error}"
            ) from error
    chroma_dir.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(chroma_dir), settings=chroma_settings)


class ChromaStore:
    """Chunks with their embeddings, stored in LlamaIndex's Chroma layout (queried through it).

    Writes are `upsert`s of whole papers in batches below Chroma's limit: a batch either lands
    or not, and a paper's older chunks beyond its new count are deleted only after its new
    chunks are in, so a failed or killed write never loses the previous version of a paper.

    Reads that find a Chroma server gone raise `StoreUnavailableError`. Nothing is cached that
    a server restart would invalidate (the HTTP client reconnects; the collection keeps its id
    on the same data path), so the same store works again once the server is back.
    """

    def __init__(self, client: Any, collection_name: str) -> None:
        self.client = client
        self.collection_name = collection_name
        self._collection: Collection | None = None
        self._max_batch: int | None = None

    @property
    def collection(self) -> Collection:
        if self._collection is None:
            with self._reaching_server():
                self._collection = self.client.get_or_create_collection(
                    self.collection_name,
                    embedding_function=None,
                    configuration={"hnsw": {"space": "cosine"}},
                )
        return self._collection

    @contextmanager
    def _reaching_server(self) -> Iterator[None]:
        """A network failure talking to a Chroma server → StoreUnavailableError (503, not 500)."""
        import httpx

        try:
            yield
        except httpx.TransportError as error:
            raise StoreUnavailableError(f"{self.location} does not answer ({error})") from error

    @property
    def location(self) -> str:
        """Where the index lives, for messages: the Chroma server's address, or embedded."""
        try:
            chroma = self.client.get_settings()
            host, port = chroma.chroma_server_host, chroma.chroma_server_http_port
        except AttributeError:  # a client without settings (a test double)
            return "Chroma index"
        return f"Chroma server at {host}:{port}" if host else "embedded Chroma index"

    @property
    def vector_store(self) -> ChromaVectorStore:
        from llama_index.vector_stores.chroma import ChromaVectorStore

        return ChromaVectorStore(chroma_collection=self.collection)

    def exists(self) -> bool:
        with self._reaching_server():
            return self.collection_name in {c.name for c in self.client.list_collections()}

    def drop(self) -> None:
        """Delete the collection (for `--rebuild`); the next access creates it empty."""
        if self.exists():
            self.client.delete_collection(self.collection_name)
        self._collection = None

    def manifest(self) -> Manifest | None:
        return Manifest.from_metadata(self.collection.metadata)

    def write_manifest(self, manifest: Manifest) -> None:
        """Record the manifest with the collection (a no-op when it is already there)."""
        if self.manifest() == manifest:
            return
        current = {
            key: value
            for key, value in (self.collection.metadata or {}).items()
            if not key.startswith(MANIFEST_PREFIX) and not key.startswith("hnsw:")
        }
        self.collection.modify(metadata={**current, **manifest.as_metadata()})

    def last_ingest(self) -> str | None:
        """When an ingest or a removal last changed the collection (ISO time), if recorded."""
        value = (self.collection.metadata or {}).get(LAST_INGEST_KEY)
        return str(value) if value else None

    def mark_ingested(self, at: str) -> None:
        # Beside the manifest, not in it: a time is no reason to call an index mismatched.
        current = {
            key: value
            for key, value in (self.collection.metadata or {}).items()
            if not key.startswith("hnsw:")
        }
        self.collection.modify(metadata={**current, LAST_INGEST_KEY: at})

    def check_manifest(self, wanted: Manifest) -> None:
        found = self.manifest()
        if found is None:
            if self.count() > 0:
                raise IndexMismatchError(
                    f"The collection {self.collection_name!r} holds data but no Scholia manifest "
                    "(embedding model, chunking), so its vectors cannot be trusted. "
                    "Rebuild it with `scholia ingest --rebuild`."
                )
            return
        differences = found.differences(wanted)
        if differences:
            raise IndexMismatchError(
                "The index was built with different settings ("
                + "; ".join(differences)
                + "). Rebuild it with `scholia ingest --rebuild`."
            )

    def count(self) -> int:
        with self._reaching_server():
            return int(self.collection.count())

    def max_batch_size(self) -> int:
        """The most records one Chroma call may carry (asked once per store)."""
        if self._max_batch is None:
            try:
                self._max_batch = max(1, int(self.client.get_max_batch_size()))
            except Exception:  # older servers do not report it
                self._max_batch = DEFAULT_MAX_BATCH
        return self._max_batch

    def scan(self) -> StoreScan:
        """One pass over the chunk metadata: each paper's state and the content fingerprint."""
        from ingest.keyword import fingerprint

        counts: dict[str, int] = {}
        first: dict[str, tuple[str, int]] = {}
        max_index: dict[str, int] = {}
        inconsistent: set[str] = set()
        chunk_ids: list[str] = []
        titles: dict[str, str] = {}
        for chunk_id, _, metadata in self._iterate(include_documents=False):
            chunk_ids.append(chunk_id)
            paper_id = str(metadata["paper_id"])
            titles.setdefault(paper_id, str(metadata.get("title", "")))
            version = (str(metadata["paper_hash"]), int(metadata["paper_chunks"]))
            counts[paper_id] = counts.get(paper_id, 0) + 1
            if first.setdefault(paper_id, version) != version:
                inconsistent.add(paper_id)
            index = int(metadata["chunk_index"])
            max_index[paper_id] = max(index, max_index.get(paper_id, -1))
        states = {
            paper_id: PaperState(
                content_hash,
                expected,
                counts[paper_id],
                max_index[paper_id],
                paper_id not in inconsistent,
            )
            for paper_id, (content_hash, expected) in first.items()
        }
        hashes = [state.content_hash for state in states.values()]
        return StoreScan(states, fingerprint(chunk_ids, hashes), titles)

    def paper_states(self) -> dict[str, PaperState]:
        return self.scan().states

    def paper_entries(self) -> list[PaperEntry]:
        """Every stored paper (one pass over the chunk metadata), in no particular order."""
        scan = self.scan()
        return [
            PaperEntry(paper_id, title, state.stored_chunks, state.content_hash, state.complete)
            for paper_id, title in scan.titles.items()
            if (state := scan.states.get(paper_id)) is not None
        ]

    def paper_chunks(self, paper_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(chunk id, chunk text, metadata) of one paper's stored chunks, in chunk order."""
        where: Any = {"paper_id": paper_id}
        with self._reaching_server():
            page = self.collection.get(where=where, include=["metadatas", "documents"])
        rows: list[tuple[str, str, dict[str, Any]]] = [
            (chunk_id, document or "", dict(metadata or {}))
            for chunk_id, document, metadata in zip(
                page["ids"], page["documents"] or [], page["metadatas"] or [], strict=True
            )
        ]
        rows.sort(key=lambda row: int(str(row[2].get("chunk_index", 0))))
        return rows

    def iter_chunks(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(chunk id, chunk text, metadata) of every stored chunk, ordered by id (holds all)."""
        rows = list(self._iterate(include_documents=True))
        rows.sort(key=lambda row: row[0])
        yield from rows

    def iter_documents(self) -> Iterator[tuple[str, str, str]]:
        """(chunk id, chunk text, paper hash) in storage order, one page in memory at a time."""
        for chunk_id, document, metadata in self._iterate(include_documents=True):
            yield chunk_id, document, str(metadata.get("paper_hash", ""))

    def _iterate(self, include_documents: bool) -> Iterator[tuple[str, str, dict[str, Any]]]:
        include: list[Any] = ["metadatas", "documents"] if include_documents else ["metadatas"]
        offset = 0
        while True:
            with self._reaching_server():
                page = self.collection.get(include=include, limit=GET_PAGE, offset=offset)
            ids = page["ids"]
            if not ids:
                return
            documents = page.get("documents") or [""] * len(ids)
            metadatas = page.get("metadatas") or [{}] * len(ids)
            for chunk_id, document, metadata in zip(ids, documents, metadatas, strict=True):
                yield chunk_id, document or "", dict(metadata or {})
            offset += len(ids)

    def papers(self, paper_ids: Sequence[str]) -> dict[str, tuple[str, str, dict[str, Any]]]:
        """paper id → (title, whole abstract re-joined from its chunks, metadata)."""
        from ingest.chunk import split_sentences

        if not paper_ids:
            return {}
        where: Any = {"paper_id": {"$in": list(paper_ids)}}
        with self._reaching_server():
            page = self.collection.get(where=where, include=["metadatas", "documents"])
        parts: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}
        for document, metadata in zip(
            page["documents"] or [], page["metadatas"] or [], strict=True
        ):
            meta = dict(metadata or {})
            parts.setdefault(str(meta["paper_id"]), []).append(
                (int(str(meta["chunk_index"])), (document or "").partition("\n")[2], meta)
            )
        papers = {}
        for paper_id, chunks in parts.items():
            chunks.sort(key=lambda item: item[0])
            sentences: list[str] = []
            for _, passage, _ in chunks:
                for sentence in split_sentences(passage):
                    # Overlapping chunks repeat the previous chunk's last sentences.
                    if sentence not in sentences[-8:]:
                        sentences.append(sentence)
            meta = chunks[0][2]
            papers[paper_id] = (str(meta["title"]), " ".join(sentences), meta)
        return papers

    def delete_papers(self, paper_ids: Sequence[str]) -> None:
        ids = list(paper_ids)
        for start in range(0, len(ids), DELETE_PAGE):
            where: Any = {"paper_id": {"$in": ids[start : start + DELETE_PAGE]}}
            self.collection.delete(where=where)

    def write_papers(
        self,
        papers: Sequence[tuple[Paper, list[Chunk]]],
        embeddings: Any,
        previous: Mapping[str, PaperState] | None = None,
    ) -> int:
        """Upsert the chunks of whole papers, then drop chunks left over from older versions.

        `embeddings` holds one vector per chunk in order (a list or a 2-D array); `previous`
        is what the store held before (from `scan`), used to find left-over chunk ids.
        Returns the number of chunks written.
        """
        previous = previous or {}
        limit = self.max_batch_size()
        batch: list[tuple[str, str, dict[str, Any], Any]] = []
        leftovers: list[str] = []
        row = 0
        for paper, chunks in papers:
            records = [
                (
                    chunk.id,
                    chunk.text,
                    _chunk_metadata(paper, chunk, len(chunks)),
                    embeddings[row + i],
                )
                for i, chunk in enumerate(chunks)
            ]
            row += len(chunks)
            if batch and len(batch) + len(records) > limit:
                self._upsert(batch, limit)
                batch = []
            batch.extend(records)
            state = previous.get(paper.id)
            if state is not None:
                leftovers.extend(
                    f"{paper.id}#{index}" for index in range(len(chunks), state.max_index + 1)
                )
        if row != len(embeddings):
            raise ValueError(f"{len(embeddings)} embeddings for {row} chunks")
        self._upsert(batch, limit)
        for start in range(0, len(leftovers), limit):
            self.collection.delete(ids=leftovers[start : start + limit])
        return row

    def _upsert(self, records: list[tuple[str, str, dict[str, Any], Any]], limit: int) -> None:
        """Upsert in calls of at most `limit` records (a single big paper may need several)."""
        import numpy as np

        for start in range(0, len(records), limit):
            part = records[start : start + limit]
            ids, documents, metadatas, vectors = zip(*part, strict=True)
            self.collection.upsert(
                ids=list(ids),
                documents=list(documents),
                metadatas=list(metadatas),
                embeddings=np.asarray(vectors, dtype=np.float32),
            )

    def query(
        self, embedding: list[float], k: int, where: dict[str, Any] | None = None
    ) -> list[ChunkHit]:
        from llama_index.core.vector_stores.types import VectorStoreQuery

        if self.count() == 0:
            return []
        with self._reaching_server():
            result = self.vector_store.query(
                VectorStoreQuery(query_embedding=embedding, similarity_top_k=k),
                **({"where": where} if where else {}),
            )
        hits = []
        for node, similarity in zip(result.nodes or [], result.similarities or [], strict=True):
            metadata = dict(node.metadata)
            text = node.get_content()
            hits.append(
                ChunkHit(
                    chunk_id=node.node_id,
                    paper_id=str(metadata.get("paper_id", "")),
                    title=str(metadata.get("title", "")),
                    text=text,
                    passage=text.partition("\n")[2],
                    # LlamaIndex reports exp(-distance); Chroma's cosine distance is 1 - cos.
                    score=1.0 + _log(similarity),
                    metadata=metadata,
                )
            )
        return hits


def _chunk_metadata(paper: Paper, chunk: Chunk, paper_chunks: int) -> dict[str, Any]:
    """The chunk's metadata in LlamaIndex's Chroma layout (`_node_content`, `document_id`…)."""
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
    from llama_index.core.vector_stores.utils import node_to_metadata_dict

    metadata: dict[str, Any] = {
        **paper.metadata,
        "paper_id": paper.id,
        "title": paper.title,
        "chunk_index": chunk.index,
        "paper_hash": paper.content_hash,
        "paper_chunks": paper_chunks,
    }
    node = TextNode(
        id_=chunk.id,
        text=chunk.text,
        metadata=metadata,
        excluded_embed_metadata_keys=list(metadata),
        excluded_llm_metadata_keys=list(metadata),
    )
    node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=paper.id)
    stored = node_to_metadata_dict(node, remove_text=True, flat_metadata=True)
    return {key: "" if value is None else value for key, value in stored.items()}


def _log(value: float) -> float:
    import math

    return math.log(value) if value > 0 else -1.0


def manifest_json(manifest: Manifest) -> str:
    return json.dumps(manifest.__dict__, indent=2, sort_keys=True)
