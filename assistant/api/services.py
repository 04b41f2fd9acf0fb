"""Everything a request needs, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

from assistant.llm import LLM, OpenAICompatibleLLM
from assistant.pipeline import Assistant
from assistant.retrieve import Retriever
from assistant.settings import Settings
from assistant.verify import Verifier
from ingest.embed import Embedder
from ingest.pipeline import keyword_index, open_store, wanted_manifest
from ingest.store import ChromaStore


@dataclass
class Services:
    settings: Settings
    assistant: Assistant
    store: ChromaStore
    llm: LLM


def llm_base_url(settings: Settings) -> str:
    """The configured LLM, or the vLLM server that `scholia serve` supervises."""
    return settings.llm.url or f"http://{settings.llm.host}:{settings.llm.port}/v1"


def build_services(
    settings: Settings, llm: LLM | None = None, embedder: Embedder | None = None
) -> Services:
    embedder = embedder or Embedder(settings.embedding.model_path, settings.embedding.batch_size)
    store = open_store(settings)
    store.check_manifest(wanted_manifest(settings, embedder))
    llm = llm or OpenAICompatibleLLM(llm_base_url(settings), settings.llm)
    retriever = Retriever(store, keyword_index(settings), embedder, settings.retrieval)
    verifier = Verifier(
        embedder, settings.answer.semantic_threshold, settings.answer.lexical_threshold
    )
    return Services(settings, Assistant(retriever, llm, verifier, settings), store, llm)
