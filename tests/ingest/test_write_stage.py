"""run_ingest with another write stage (as `--engine ray` plugs in): same selection, same
writes, and a stage that stops midway is repaired by the next run of either engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.pipeline import WriteJob, chunks_of, iter_selected, run_ingest, write_batches
from tests.ingest.helpers import (
    HashEmbedder,
    keyword_state,
    make_settings,
    paper_records,
    snapshot,
    write_jsonl,
)

PAPERS = 12


class Stopped(Exception):
    """Stands for a killed job."""


def _elsewhere(job: WriteJob, stop_after: int | None = None) -> None:
    """Chunks and vectors made outside the writer, like Ray's actors make them."""
    chunked = []
    for paper in iter_selected(job.sources, job.todo):
        chunks = chunks_of(paper, job.embedder, job.settings.chunking)
        chunked.append((paper, chunks, job.embedder.encode([chunk.text for chunk in chunks])))
    write_batches(job, chunked[:stop_after])
    if stop_after is not None:
        raise Stopped


def test_a_stage_stopped_midway_is_repaired_by_the_next_run(
    tmp_path: Path, hash_embedder: HashEmbedder
) -> None:
    source = write_jsonl(tmp_path / "corpus.jsonl", paper_records(PAPERS))
    settings = make_settings(tmp_path / "stopped")
    with pytest.raises(Stopped):
        run_ingest(
            settings,
            [source],
            embedder=hash_embedder,
            log=lambda _: None,
            write_stage=lambda job: _elsewhere(job, stop_after=5),
        )
    resumed = run_ingest(settings, [source], embedder=hash_embedder, log=lambda _: None)
    assert (resumed.added, resumed.unchanged) == (PAPERS - 5, 5)

    again = run_ingest(
        settings, [source], embedder=hash_embedder, log=lambda _: None, write_stage=_elsewhere
    )
    assert (again.unchanged, again.chunks_written) == (PAPERS, 0)

    clean = make_settings(tmp_path / "clean")
    run_ingest(clean, [source], embedder=hash_embedder, log=lambda _: None, write_stage=_elsewhere)
    assert snapshot(settings, embeddings=True)[:3] == snapshot(clean)
    assert keyword_state(settings) == keyword_state(clean)
