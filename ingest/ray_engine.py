"""`scholia ingest --engine ray`: the pipeline's write stage as Ray Data stages.

run_ingest keeps everything but the write stage, so the selection (manifest, store scan,
papers to write), the ledger, the keyword refresh and the manifest are those of the local
engine. Here the driver reads the selected papers; Ray chunks them (map_batches) and embeds
them (an actor pool, one actor per GPU or CPU slot, each loading the model once); the driver
writes whole papers in batches through the pipeline's own `write_batches`, so a re-run after a
killed job finds every written paper complete and writes only the rest.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import ingest
import scholia
from ingest.chunk import Chunk
from ingest.embed import Embedder
from ingest.parse import Paper
from ingest.pipeline import (
    WriteJob,
    WriteStage,
    chunks_of,
    iter_selected,
    reject_unchunkable,
    write_batches,
)
from scholia.offline import OFFLINE_ENV
from scholia.settings import ChunkingSettings, EmbeddingSettings

if TYPE_CHECKING:
    import numpy as np

# Each row is one pickled paper: (Paper,), then (Paper, chunks, error), then with vectors.
ROW = "paper"
PAPERS_PER_BLOCK = 64
# Logical CPUs the chunking actor takes; the embedding actors share the rest.
CHUNKER_CPUS = 0.5


def ray_write_stage(address: str | None = None) -> WriteStage:
    """The write stage on the Ray cluster at `address`, or on a local one started here."""

    def stage(job: WriteJob) -> None:
        started_here = _connect(address)
        try:
            write_batches(job, _embedded(job))
        finally:
            if started_here:
                import ray

                ray.shutdown()

    return stage


def _connect(address: str | None) -> bool:
    """Join the cluster (or start a local one when `address` is None); True if this call
    connected. The workers get this checkout's `ingest` and `scholia` (py_modules), so the
    cluster needs only the dependencies installed."""
    import ray

    if ray.is_initialized():
        return False
    env = dict(OFFLINE_ENV)  # the workers load the model from disk, as the driver does
    runtime_env: dict[str, Any] = {"py_modules": [ingest, scholia], "env_vars": env}
    ray.init(
        address=address,
        runtime_env=runtime_env,
        include_dashboard=None if address else False,
        logging_level=logging.WARNING,
    )
    return True


def _embedded(job: WriteJob) -> Iterator[tuple[Paper, list[Chunk], np.ndarray]]:
    """The selected papers chunked and embedded on the cluster, as they come; a paper that
    cannot be chunked is reported as rejected on the driver."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 1))
    actors = gpus or max(1, int(cpus))
    per_actor = {"num_gpus": 1} if gpus else {"num_cpus": max(cpus - CHUNKER_CPUS, 0.5) / actors}
    papers = [{ROW: pickle.dumps(paper)} for paper in iter_selected(job.sources, job.todo)]
    embedding, chunking = job.settings.embedding, job.settings.chunking
    dataset = (
        ray.data.from_items(papers, override_num_blocks=max(1, len(papers) // PAPERS_PER_BLOCK))
        .map_batches(
            _Chunker,
            fn_constructor_args=(embedding, chunking),
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=CHUNKER_CPUS,
            batch_size=PAPERS_PER_BLOCK,
        )
        .map_batches(
            _Encoder,
            fn_constructor_args=(embedding, per_actor.get("num_cpus", 1)),
            compute=ray.data.ActorPoolStrategy(size=actors),
            batch_size=PAPERS_PER_BLOCK,
            **per_actor,
        )
    )
    for row in dataset.iter_rows():
        paper, chunks, error, vectors = pickle.loads(row[ROW])
        if error is None:
            yield paper, chunks, vectors
        else:
            reject_unchunkable(paper, error, job)


class _Chunker:
    """Chunks papers with the model's tokenizer (loaded once per actor)."""

    def __init__(self, embedding: EmbeddingSettings, chunking: ChunkingSettings) -> None:
        self.embedder = Embedder.of(embedding)
        self.chunking = chunking

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[bytes]]:
        rows = []
        for blob in batch[ROW]:
            paper: Paper = pickle.loads(blob)
            try:
                chunks, error = chunks_of(paper, self.embedder, self.chunking), None
            except ValueError as failure:
                chunks, error = [], str(failure)
            rows.append(pickle.dumps((paper, chunks, error)))
        return {ROW: rows}


class _Encoder:
    """Embeds the chunks of a batch of papers in one `encode` (model loaded once per actor)."""

    def __init__(self, embedding: EmbeddingSettings, cpus: float) -> None:
        import torch

        self.embedder = Embedder.of(embedding)
        if self.embedder.torch_device == "cpu":
            torch.set_num_threads(max(1, round(cpus)))  # its share, not every core of the node

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[bytes]]:
        papers = [pickle.loads(blob) for blob in batch[ROW]]
        vectors = self.embedder.encode([c.text for _, chunks, _ in papers for c in chunks])
        rows, start = [], 0
        for paper, chunks, error in papers:
            end = start + len(chunks)
            rows.append(pickle.dumps((paper, chunks, error, vectors[start:end])))
            start = end
        return {ROW: rows}
