"""A real `scholia ingest` process killed with SIGKILL mid-run, then re-run, equals a clean run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ingest.embed import Embedder
from ingest.pipeline import IngestLockedError, ingest_lock, open_store, run_ingest
from tests.ingest.helpers import (
    HashEmbedder,
    keyword_state,
    make_settings,
    paper_records,
    snapshot,
    write_jsonl,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PAPERS = 309  # the bundled corpus three times, with distinct titles


def _start_ingest(data_dir: Path, source: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "SCHOLIA_DATA_DIR": str(data_dir),
        # Small batches: many write rounds, so the kill lands between or inside writes.
        "SCHOLIA_EMBEDDING_BATCH_SIZE": "8",
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "assistant.cli", "ingest", str(source)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_for_progress(process: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith("ingest: "):
                return line
        if process.poll() is not None:
            pytest.fail(f"ingest exited ({process.returncode}) before writing:\n{text[-3000:]}")
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"no progress line within {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


def test_ingest_killed_mid_run_then_rerun_equals_a_clean_run(
    tmp_path: Path, embedder: Embedder, hash_embedder: HashEmbedder
) -> None:
    source = write_jsonl(tmp_path / "corpus.jsonl", paper_records(PAPERS))
    killed = make_settings(tmp_path / "killed")
    log = tmp_path / "ingest.log"
    process = _start_ingest(killed.data_dir, source, log)
    try:
        first = _wait_for_progress(process, log, timeout=300)
        done = int(first.split()[1].split("/")[0])
        assert 0 < done < PAPERS, first
        # While it runs, the data directory is locked against a second ingest.
        with (
            pytest.raises(IngestLockedError, match=f"pid {process.pid}"),
            ingest_lock(killed.data_dir),
        ):
            pass
        delay = random.Random().uniform(0.0, 2.0)  # anywhere in the next embed/write round
        time.sleep(delay)
        assert process.poll() is None, "ingest finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    output = log.read_text(errors="replace")
    assert "added " not in output  # it never reached its summary

    stored = open_store(killed).count()
    assert stored > 0
    # The re-run and the clean reference use the cheap embedder: ids, texts, metadata and BM25
    # do not depend on the vectors, and the real model's cost is paid by the killed process.
    lines: list[str] = []
    report = run_ingest(killed, [source], embedder=hash_embedder, log=lines.append)
    assert report.added + report.updated + report.unchanged == PAPERS
    assert report.unchanged >= done and report.chunks_written > 0, (delay, stored, report)
    assert not report.rejected

    clean = make_settings(tmp_path / "clean")
    run_ingest(clean, [source], embedder=hash_embedder, log=lambda _: None)
    resumed_ids, resumed_docs, resumed_meta, vectors = snapshot(killed, embeddings=True)
    clean_ids, clean_docs, clean_meta = snapshot(clean)
    assert len(resumed_ids) == len(set(resumed_ids)) == len(clean_ids)
    assert resumed_ids == clean_ids
    assert resumed_docs == clean_docs
    assert resumed_meta == clean_meta
    assert keyword_state(killed) == keyword_state(clean)
    assert open_store(killed).manifest() == open_store(clean).manifest()
    # What the killed process wrote has the real model's vectors, each with its own text.
    cheap = hash_embedder.encode(resumed_docs)
    from_killed = [i for i in range(len(resumed_ids)) if not np.allclose(vectors[i], cheap[i])]
    assert len(from_killed) >= done
    sample = random.Random(7).sample(from_killed, 12)
    fresh = embedder.encode([resumed_docs[i] for i in sample])
    assert np.allclose(vectors[sample], fresh, atol=1e-4)
