"""The ingest benchmark (`scholia eval perf --sizes …`): full ingest vs raw `encode` of the same
chunk texts, on synthetic corpora (the bundled abstracts' sentences shuffled) of each size. Each
measurement runs in a fresh process, so its peak RSS is its own: raw `encode` of half the texts,
the ingest (time per phase), raw `encode` of the other half; a drift in the machine's load thus
weighs on both sides. `throughput_ratio` = ingest ÷ raw docs/s, by wall clock and CPU time."""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from importlib import import_module
from multiprocessing import get_context
from pathlib import Path
from typing import Any
from unittest.mock import patch

from eval.harness import Panel, flat, write_outputs

RESULT_FILE, PLOT_FILE = "bench_ingest.json", "bench_ingest.png"
LOGGED = ("ingest_s_per_doc", "throughput_ratio", "throughput_ratio_cpu", "peak_rss_ingest_mb")


def _cpu_s() -> float:
    return sum(resource.getrusage(resource.RUSAGE_SELF)[:2])  # user + system


def synthetic_records(size: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """`size` papers, each with a real paper's sentence count drawn from all papers' sentences,
    so lengths (and chunks per paper) follow the real corpus."""
    from ingest.chunk import split_sentences
    from ingest.parse import Paper, read_papers
    from scholia.settings import BUNDLED_CORPUS

    papers = [item for item in read_papers(BUNDLED_CORPUS) if isinstance(item, Paper)]
    split = [split_sentences(paper.abstract) for paper in papers]
    sentences = [sentence for paper in split for sentence in paper]
    words = sorted({word for paper in papers for word in paper.title.split() if word.isalpha()})
    rng = random.Random(seed)
    for number in range(size):
        yield {
            "id": f"synthetic-{seed}-{number:07d}",
            "title": f"{' '.join(rng.sample(words, 6)).capitalize()} ({number})",
            "abstract": " ".join(rng.choice(sentences) for _ in range(len(rng.choice(split)))),
            "published": str(2000 + rng.randrange(26)),
            "authors": [f"Author {rng.randrange(5000)}", f"Author {rng.randrange(5000)}"],
        }


def write_corpus(path: Path, size: int, seed: int = 0) -> Path:
    lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in synthetic_records(size, seed))
    write_outputs(path.parent, {path.name: "".join(lines)})
    return path


@contextmanager
def measured(*phases: tuple[Any, str, str]) -> Iterator[dict[str, Any]]:
    """Wall and CPU seconds, the peak RSS of this (fresh) process, and the seconds spent in each
    phase: (owner, function, label), the function wrapped in place while measuring."""
    figures: dict[str, Any] = {"phases_s": {label: 0.0 for *_, label in phases}}

    def timed(original: Callable[..., Any], label: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            tick = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                figures["phases_s"][label] += time.perf_counter() - tick

        return wrapper

    with ExitStack() as stack:
        for owner, name, label in phases:
            stack.enter_context(patch.object(owner, name, timed(getattr(owner, name), label)))
        cpu, tick = _cpu_s(), time.perf_counter()
        yield figures
        figures |= {"wall_s": time.perf_counter() - tick, "cpu_s": _cpu_s() - cpu}
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _digest(texts: list[str]) -> str:
    return hashlib.sha256("\0".join(sorted(texts)).encode("utf-8")).hexdigest()


def _warm_up() -> Any:
    """The model and the libraries the write path imports, loaded outside any timing."""
    import chromadb  # noqa: F401
    import llama_index.core.vector_stores.utils  # noqa: F401

    from ingest.embed import Embedder
    from scholia.settings import Settings

    embedder = Embedder(batch_size=Settings().embedding.batch_size)
    embedder.model.encode(["warm up the model"] * 4, batch_size=embedder.batch_size)
    return embedder


def ingest_child(corpus: Path, data_dir: Path, engine: str = "local") -> dict[str, Any]:
    """One full ingest into an empty data directory (engine "ray": a local Ray cluster started
    in the measurement; the peak RSS is then the driver's only)."""
    from ingest import pipeline
    from ingest.keyword import KeywordIndex
    from ingest.store import ChromaStore
    from scholia.settings import Settings

    settings = Settings(data_dir=data_dir)
    embedder = _warm_up()
    # From the same counter as the peak below (psutil's RSS can read a page above it).
    rss_after_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with measured(
        (embedder, "encode", "embed"),
        (ChromaStore, "write_papers", "chroma_write"),
        (ChromaStore, "scan", "chroma_scan"),
        (KeywordIndex, "build_from", "bm25_build"),
        (pipeline, "chunk_paper", "chunk"),
    ) as figures:
        stage = None if engine == "local" else import_module("ingest.ray_engine").ray_write_stage()
        report = pipeline.run_ingest(
            settings, [corpus], embedder=embedder, log=lambda _: None, write_stage=stage
        )
    texts = [text for _, text, _ in pipeline.open_store(settings).iter_documents()]
    figures["phases_s"]["other"] = figures["wall_s"] - sum(figures["phases_s"].values())
    return figures | {
        "papers": report.added,
        "rejected": len(report.rejected),
        "chunks": len(texts),
        "texts_digest": _digest(texts),
        "rss_after_model_mb": rss_after_model,
        "index_disk_mb": sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file()) / 2**20,
    }


def raw_child(corpus: Path, half: int) -> dict[str, Any]:
    """Chunk the corpus (untimed), then `encode` every other chunk text, from `half`."""
    from ingest.chunk import chunk_paper
    from ingest.parse import Paper, read_papers
    from scholia.settings import Settings

    chunking, embedder = Settings().chunking, _warm_up()
    limits = chunking.max_tokens, chunking.overlap_tokens
    papers = [item for item in read_papers(corpus) if isinstance(item, Paper)]
    texts = [c.text for p in papers for c in chunk_paper(p, embedder.count_tokens, *limits)]
    options = {"normalize_embeddings": True, "convert_to_numpy": True, "show_progress_bar": False}
    with measured() as figures:
        embedder.model.encode(texts[half::2], batch_size=embedder.batch_size, **options)
    return figures | {"chunks": len(texts), "texts_digest": _digest(texts)}


def _in_child(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """`function(*args)` in a fresh process; the 1-minute load average before and after."""
    load = os.getloadavg()[0]
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        result = pool.submit(function, *args).result()
    return result | {"load_average_1m": [round(load, 2), round(os.getloadavg()[0], 2)]}


def run_ingest_benchmark(
    sizes: list[int], out_dir: Path, *, log: Callable[[str], None] = print, engine: str = "local"
) -> dict[str, Any]:
    """Each size measured in child processes; bench_ingest.json and .png into `out_dir`, the
    JSON after each size (partial results survive a later failure)."""
    summary: dict[str, Any] = {}
    results: list[dict[str, Any]] = []
    for size in sizes:
        folder = out_dir / "work" / f"size-{size}"
        shutil.rmtree(folder, ignore_errors=True)
        corpus = write_corpus(folder / "corpus.jsonl", size)  # seed 0
        log(f"bench_ingest: {size} papers: raw encode, ingest, raw encode")
        first = _in_child(raw_child, corpus, 0)
        ingest = _in_child(ingest_child, corpus, folder / "data", engine)
        results.append(_combine(size, ingest, first, _in_child(raw_child, corpus, 1)))
        shutil.rmtree(out_dir / "work", ignore_errors=True)
        log(f"bench_ingest: {size} papers: {flat({k: results[-1][k] for k in LOGGED})}")
        # max ÷ min seconds per document across sizes (target ≤ 1.2); in CPU seconds too,
        # which a busy shared machine disturbs far less
        per_doc = {c: [r[f"ingest_{c}s_per_doc"] for r in results] for c in ("", "cpu_")}
        spread = {f"{c}s_per_doc_spread": round(max(v) / min(v), 3) for c, v in per_doc.items()}
        summary = {"sizes": sizes, "seed": 0, **spread, "results": results, "engine": engine}
        write_outputs(out_dir, {RESULT_FILE: summary})
    write_outputs(out_dir, {PLOT_FILE: panels(results)})
    return summary


def _combine(size: int, ingest: dict, first: dict, second: dict) -> dict[str, Any]:
    if not ingest["texts_digest"] == first["texts_digest"] == second["texts_digest"]:
        raise RuntimeError("the raw baseline did not encode the chunk texts the ingest stored")
    papers = max(int(ingest["papers"]), 1)
    result = {"size": size} | {key: ingest[key] for key in ("papers", "chunks", "rejected")}
    for clock, key, ratio in [("", "wall_s", ""), ("cpu_", "cpu_s", "_cpu")]:
        raw, spent = first[key] + second[key], ingest[key]
        result |= {f"ingest_{clock}s": spent, f"ingest_{clock}s_per_doc": spent / papers}
        result |= {f"raw_encode_{clock}s": raw, f"raw_encode_{clock}s_per_doc": raw / papers}
        result[f"throughput_ratio{ratio}"] = raw / spent
    return result | {
        "phases_s": {phase: round(seconds, 3) for phase, seconds in ingest["phases_s"].items()},
        "rss_after_model_mb": ingest["rss_after_model_mb"],
        "peak_rss_ingest_mb": ingest["peak_rss_mb"],
        "rss_growth_ingest_mb": ingest["peak_rss_mb"] - ingest["rss_after_model_mb"],
        "peak_rss_raw_encode_mb": max(first["peak_rss_mb"], second["peak_rss_mb"]),
        "index_disk_mb": ingest["index_disk_mb"],
        # (before, after) of each child: raw encode, ingest, raw encode
        "load_average_1m": [child["load_average_1m"] for child in (first, ingest, second)],
    }


def panels(results: list[dict[str, Any]]) -> list[Panel]:
    """Time per paper (wall and CPU, ingest and raw encode) and memory, by corpus size."""
    sizes = [r["size"] for r in results]

    def lines(keys: dict[str, str], scale: float = 1) -> dict[str, Any]:
        return {label: (sizes, [r[key] * scale for r in results]) for label, key in keys.items()}

    per_paper = {"ingest, wall": "ingest_s_per_doc", "raw encode, wall": "raw_encode_s_per_doc"}
    per_paper["ingest, CPU"] = "ingest_cpu_s_per_doc"
    per_paper["raw encode, CPU"] = "raw_encode_cpu_s_per_doc"
    memory = {"peak RSS, ingest": "peak_rss_ingest_mb", "after model load": "rss_after_model_mb"}
    memory["peak RSS, raw encode"] = "peak_rss_raw_encode_mb"
    axes = {"xlabel": "papers", "log_x": max(sizes) >= 10 * min(sizes)}
    return [
        Panel("Time per paper", "line", lines(per_paper, 1000), ylabel="ms", **axes),
        Panel("Memory", "line", lines(memory), ylabel="MB", **axes),
    ]
