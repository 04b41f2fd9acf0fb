"""`scholia ingest --engine ray` on a local Ray cluster (2 CPUs) against a `chroma run` server:
killed midway and re-run, it writes nothing twice and ends where the local engine ends."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from eval.bench_ingest import write_corpus
from ingest.embed import Embedder, packaged_model_path
from ingest.pipeline import ingest_ledger, open_store, run_ingest
from scholia.settings import IndexSettings
from tests.ingest.helpers import HashEmbedder, keyword_state, make_settings, snapshot

pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.chroma_server]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PAPERS = 2000
SUMMARY = re.compile(r"added (\d+), updated (\d+), unchanged (\d+)")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM cut to its first layer, reading 32 tokens: the same tokenizer, so the same chunks,
    at a small part of the embedding cost (a few thousand papers on 2 shared CPUs)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(packaged_model_path()), device="cpu", local_files_only=True)
    encoder = model[0].auto_model
    encoder.encoder.layer = encoder.encoder.layer[:1]
    encoder.config.num_hidden_layers = 1
    model.max_seq_length = 32
    folder = tmp_path_factory.mktemp("model") / "minilm-tiny"
    model.save(str(folder))
    return folder


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray cluster of 2 CPUs, owned by this process (it stops with it)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300 * 2**20)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _start_ingest(
    data_dir: Path, model: Path, source: Path, address: str, chroma_url: str, log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "SCHOLIA_DATA_DIR": str(data_dir),
        "SCHOLIA_EMBEDDING_MODEL_PATH": str(model),
        # Small batches: many write rounds, so the kill lands between or inside writes.
        "SCHOLIA_EMBEDDING_BATCH_SIZE": "16",
    }
    command = ["ingest", "--engine", "ray", "--address", address, "--chroma-url", chroma_url]
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "assistant.cli", *command, str(source)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _first_progress(process: subprocess.Popen[bytes], log: Path, timeout: float) -> int:
    """Papers written when the first progress line appears."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"^ingest: (\d+)/", log.read_text(errors="replace"), re.MULTILINE)
        if found:
            return int(found.group(1))
        if process.poll() is not None:
            pytest.fail(f"ingest exited ({process.returncode}) before writing:\n{_tail(log)}")
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"no progress line within {timeout} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def test_ray_ingest_killed_then_rerun_equals_a_local_ingest(
    tmp_path: Path, tiny_model: Path, ray_address: str, chroma_url: str
) -> None:
    source = write_corpus(tmp_path / "corpus.jsonl", PAPERS)
    data_dir, log = tmp_path / "ray", tmp_path / "ingest.log"
    process = _start_ingest(data_dir, tiny_model, source, ray_address, chroma_url, log)
    try:
        done = _first_progress(process, log, timeout=360)
        time.sleep(random.Random().uniform(0.0, 1.0))  # anywhere in the next rounds
        assert process.poll() is None, "ingest finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert 0 < done < PAPERS
    assert "added " not in log.read_text(errors="replace")  # it never reached its summary

    rerun = _start_ingest(data_dir, tiny_model, source, ray_address, chroma_url, log)
    assert rerun.wait(timeout=360) == 0, _tail(log)
    added, updated, unchanged = map(int, SUMMARY.findall(log.read_text())[-1])
    assert added + updated + unchanged == PAPERS and unchanged >= done, (done, added, unchanged)

    ray_run = make_settings(data_dir, embedding={"model_path": tiny_model})
    ray_run = ray_run.model_copy(update={"index": IndexSettings(chroma_url=chroma_url)})
    written = Counter(json.loads(line)["id"] for line in ingest_ledger(ray_run).path.open())
    assert written and max(written.values()) == 1  # no paper written twice

    # The local engine on the same corpus, with cheap vectors: ids, texts, metadata, BM25 and
    # the manifest do not depend on them.
    model = Embedder(tiny_model)
    local = make_settings(tmp_path / "local", embedding={"model_path": tiny_model})
    run_ingest(local, [source], embedder=HashEmbedder(model), log=lambda _: None)
    ids, documents, metadatas, vectors = snapshot(ray_run, embeddings=True)
    assert len(ids) == len(set(ids)) and (ids, documents, metadatas) == snapshot(local)
    assert keyword_state(ray_run)[0] == keyword_state(local)[0]
    assert open_store(ray_run).manifest() == open_store(local).manifest()
    # The actors' vectors are the model's, each with its own chunk's text.
    sample = random.Random(7).sample(range(len(ids)), 16)
    fresh = model.encode([documents[i] for i in sample])
    assert np.allclose(vectors[sample], fresh, atol=1e-4)
