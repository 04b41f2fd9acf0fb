"""Ingest benchmark: full ingest vs raw `SentenceTransformer.encode`, and scaling with corpus size.

For each size N, a synthetic corpus of N papers is generated from the bundled abstracts (sentences
shuffled across papers, new unique titles). Each measurement runs in a child process of its own,
after the model is loaded and warm, so that every size starts from the same memory and the peak
RSS is that size's alone:

1. raw baseline, first half: `model.encode` on every other chunk text (the chunking is untimed);
2. full ingest (`run_ingest`: parse, chunk, embed, write Chroma, build BM25) into an empty data
   directory; RSS sampled every 50 ms by a thread; time per phase recorded;
3. raw baseline, second half: the other chunk texts.

Raw halves before and after the ingest make a drift in the machine's load weigh on both sides.
The raw texts are checked to be exactly the chunk texts the ingest stored (same batch size).
`throughput_ratio` = ingest docs/s ÷ raw-encode docs/s, by wall clock and by CPU time (1.0: the
ingest costs nothing beyond encoding).

    python -m eval.bench_ingest --sizes 1000,10000 --out DIR

writes DIR/bench_ingest.json and DIR/bench_ingest.png; `run_ingest_benchmark` does the same for
callers (`scholia eval perf`). Any size works: the corpus is streamed, never held in memory; 100k
papers need ~2 GB of disk for the index and, at ~10–16 abstracts/s on a small CPU, hours.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eval.harness import Panel, write_outputs

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULT_FILE = "bench_ingest.json"
PLOT_FILE = "bench_ingest.png"
RSS_SAMPLE_S = 0.05

Log = Callable[[str], None]


# ----------------------------------------------------------------------------- corpus


def synthetic_records(size: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """`size` papers built from the bundled abstracts' sentences, each with a unique title.

    Each paper takes a real paper's sentence count and draws that many sentences from all
    papers, so lengths (and chunks per paper) follow the real corpus.
    """
    from ingest.chunk import split_sentences
    from ingest.parse import Paper, read_papers
    from scholia.settings import BUNDLED_CORPUS

    papers = [item for item in read_papers(BUNDLED_CORPUS) if isinstance(item, Paper)]
    sentences = [sentence for paper in papers for sentence in split_sentences(paper.abstract)]
    lengths = [len(split_sentences(paper.abstract)) for paper in papers]
    title_words = sorted(
        {word for paper in papers for word in paper.title.split() if word.isalpha()}
    )
    rng = random.Random(seed)
    for number in range(size):
        words = " ".join(rng.sample(title_words, 6))
        yield {
            "id": f"synthetic-{seed}-{number:07d}",
            "title": f"{words.capitalize()} ({number})",
            "abstract": " ".join(rng.choice(sentences) for _ in range(rng.choice(lengths))),
            "published": str(2000 + rng.randrange(26)),
            "authors": [f"Author {rng.randrange(5000)}", f"Author {rng.randrange(5000)}"],
        }


def write_corpus(path: Path, size: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in synthetic_records(size, seed):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


# ----------------------------------------------------------------------------- child process


class RssSampler:
    """Peak resident memory of this process, sampled by a daemon thread."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.peak = self.current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current(self) -> int:
        return int(self._process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_S):
            self.peak = max(self.peak, self.current())

    def __enter__(self) -> RssSampler:
        self.peak = self.current()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


class PhaseTimer:
    """Seconds spent inside selected functions (wrapped in place while active)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def wrap(self, owner: Any, name: str, label: str) -> Iterator[None]:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            tick = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - tick

        setattr(owner, name, timed)
        try:
            yield
        finally:
            setattr(owner, name, original)


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _texts_digest(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in sorted(texts):
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()


def _warm_up(batch_size: int) -> Any:
    """Load the model and the libraries the write path imports, outside any timing."""
    import chromadb  # noqa: F401
    import llama_index.core.schema
    import llama_index.core.vector_stores.utils  # noqa: F401

    from ingest.embed import Embedder

    embedder = Embedder(batch_size=batch_size)
    embedder.model.encode(["warm up the model"] * 4, batch_size=batch_size)
    return embedder


def measure_ingest_child(corpus: Path, data_dir: Path, batch_size: int) -> dict[str, Any]:
    """In a child process: one full ingest into an empty data directory."""
    import resource

    from ingest import pipeline
    from ingest.keyword import KeywordIndex
    from ingest.store import ChromaStore
    from scholia.settings import EmbeddingSettings, Settings

    settings = Settings(data_dir=data_dir, embedding=EmbeddingSettings(batch_size=batch_size))
    embedder = _warm_up(batch_size)
    rss_model = RssSampler().current()
    phases = PhaseTimer()
    lines: list[str] = []
    with (
        phases.wrap(embedder, "encode", "embed"),
        phases.wrap(ChromaStore, "write_papers", "chroma_write"),
        phases.wrap(ChromaStore, "scan", "chroma_scan"),
        phases.wrap(KeywordIndex, "build_from", "bm25_build"),
        phases.wrap(pipeline, "chunk_paper", "chunk"),
        RssSampler() as rss,
    ):
        cpu = _cpu_seconds()
        tick = time.perf_counter()
        report = pipeline.run_ingest(
            settings, [corpus], embedder=embedder, log=lines.append, progress=False
        )
        wall = time.perf_counter() - tick
        cpu = _cpu_seconds() - cpu
    texts = [text for _, text, _ in pipeline.open_store(settings).iter_documents()]
    index_bytes = sum(path.stat().st_size for path in data_dir.rglob("*") if path.is_file())
    return {
        "papers": report.added,
        "rejected": len(report.rejected),
        "chunks": len(texts),
        "texts_digest": _texts_digest(texts),
        "wall_s": wall,
        "cpu_s": cpu,
        "phases_s": {
            **{key: round(value, 3) for key, value in phases.seconds.items()},
            "other": round(wall - sum(phases.seconds.values()), 3),
        },
        "rss_after_model_mb": rss_model / 2**20,
        "peak_rss_mb": rss.peak / 2**20,
        "max_rss_process_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "index_disk_mb": index_bytes / 2**20,
        "torch_threads": _torch_threads(),
    }


def measure_raw_child(corpus: Path, half: int, batch_size: int) -> dict[str, Any]:
    """In a child process: chunk the corpus (untimed), then `encode` every other chunk text.

    Half 0 runs before the ingest and half 1 after it, so that a change in the machine's load
    during the run weighs on both sides of the ratio alike.
    """
    from ingest.chunk import chunk_paper
    from ingest.parse import Paper, read_papers
    from scholia.settings import Settings

    chunking = Settings().chunking
    embedder = _warm_up(batch_size)
    texts = [
        chunk.text
        for item in read_papers(corpus)
        if isinstance(item, Paper)
        for chunk in chunk_paper(
            item, embedder.count_tokens, chunking.max_tokens, chunking.overlap_tokens
        )
    ]
    mine = texts[half::2]
    with RssSampler() as rss:
        cpu = _cpu_seconds()
        tick = time.perf_counter()
        embedder.model.encode(
            mine,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        wall = time.perf_counter() - tick
        cpu = _cpu_seconds() - cpu
    return {
        "chunks": len(texts),
        "texts_digest": _texts_digest(texts),
        "encoded": len(mine),
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": rss.peak / 2**20,
    }


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


# ----------------------------------------------------------------------------- parent


def run_ingest_benchmark(
    sizes: list[int],
    out_dir: Path,
    *,
    batch_size: int = 64,
    seed: int = 0,
    keep_data: bool = False,
    log: Log = print,
) -> dict[str, Any]:
    """Measure each size in a child process; write bench_ingest.json and .png into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "work"
    results: list[dict[str, Any]] = []
    for size in sizes:
        folder = work / f"size-{size}"
        shutil.rmtree(folder, ignore_errors=True)
        corpus = write_corpus(folder / "corpus.jsonl", size, seed)
        log(f"bench_ingest: {size} papers: raw encode (first half)…")
        raw_first = _run_child(["raw", str(corpus), "0"], folder, batch_size)
        log(f"bench_ingest: {size} papers: full ingest…")
        ingest = _run_child(["ingest", str(corpus), str(folder / "data")], folder, batch_size)
        log(f"bench_ingest: {size} papers: raw encode (second half)…")
        raw_second = _run_child(["raw", str(corpus), "1"], folder, batch_size)
        result = _combine(size, ingest, raw_first, raw_second)
        results.append(result)
        log(
            f"bench_ingest: {size} papers: {result['ingest_s_per_doc'] * 1000:.1f} ms/doc, "
            f"ratio {result['throughput_ratio']:.3f} "
            f"(CPU time {result['throughput_ratio_cpu']:.3f}), "
            f"peak RSS {result['peak_rss_ingest_mb']:.0f} MB"
        )
        if not keep_data:
            shutil.rmtree(folder, ignore_errors=True)
        _save(out_dir, sizes, batch_size, seed, results)  # partial results survive a later failure
    if not keep_data:
        shutil.rmtree(work, ignore_errors=True)
    summary = _save(out_dir, sizes, batch_size, seed, results)
    write_outputs(out_dir, {PLOT_FILE: panels(results)})
    return summary


def _run_child(arguments: list[str], folder: Path, batch_size: int) -> dict[str, Any]:
    result = folder / "child-result.json"
    result.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "SCHOLIA_DATA_DIR": str(folder / "data"),
    }
    command = [sys.executable, "-m", "eval.bench_ingest", "--batch-size", str(batch_size)]
    load = os.getloadavg()[0]
    completed = subprocess.run(
        [*command, "--child", str(result), *arguments],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"ingest benchmark child {arguments[0]} failed ({completed.returncode}):\n"
            + completed.stderr[-4000:]
        )
    data: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    data["load_average_1m"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    return data


def _combine(
    size: int, ingest: dict[str, Any], first: dict[str, Any], second: dict[str, Any]
) -> dict[str, Any]:
    if not ingest["texts_digest"] == first["texts_digest"] == second["texts_digest"]:
        raise RuntimeError("the raw baseline did not encode the chunk texts the ingest stored")
    papers = max(int(ingest["papers"]), 1)
    raw_wall = first["wall_s"] + second["wall_s"]
    raw_cpu = first["cpu_s"] + second["cpu_s"]
    return {
        "size": size,
        "papers": ingest["papers"],
        "chunks": ingest["chunks"],
        "rejected": ingest["rejected"],
        "ingest_s": ingest["wall_s"],
        "ingest_s_per_doc": ingest["wall_s"] / papers,
        "ingest_docs_per_s": papers / ingest["wall_s"],
        "raw_encode_s": raw_wall,
        "raw_encode_s_per_doc": raw_wall / papers,
        "raw_encode_docs_per_s": papers / raw_wall,
        "throughput_ratio": raw_wall / ingest["wall_s"],
        "ingest_cpu_s": ingest["cpu_s"],
        "ingest_cpu_s_per_doc": ingest["cpu_s"] / papers,
        "raw_encode_cpu_s": raw_cpu,
        "raw_encode_cpu_s_per_doc": raw_cpu / papers,
        "throughput_ratio_cpu": raw_cpu / ingest["cpu_s"],
        "phases_s": ingest["phases_s"],
        "rss_after_model_mb": ingest["rss_after_model_mb"],
        "peak_rss_ingest_mb": ingest["peak_rss_mb"],
        "rss_growth_ingest_mb": ingest["peak_rss_mb"] - ingest["rss_after_model_mb"],
        "peak_rss_raw_encode_mb": max(first["peak_rss_mb"], second["peak_rss_mb"]),
        "index_disk_mb": ingest["index_disk_mb"],
        "torch_threads": ingest["torch_threads"],
        "load_average_1m": {
            "raw_first": first["load_average_1m"],
            "ingest": ingest["load_average_1m"],
            "raw_second": second["load_average_1m"],
        },
    }


def _save(
    out_dir: Path, sizes: list[int], batch_size: int, seed: int, results: list[dict[str, Any]]
) -> dict[str, Any]:
    def by_size(key: str, digits: int) -> dict[int, float]:
        return {r["size"]: round(r[key], digits) for r in results}

    def spread(key: str) -> float | None:
        values = [r[key] for r in results]
        return round(max(values) / min(values), 3) if values else None

    summary: dict[str, Any] = {
        "sizes": sizes,
        "batch_size": batch_size,
        "seed": seed,
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "throughput_ratio": by_size("throughput_ratio", 3),
        "throughput_ratio_cpu": by_size("throughput_ratio_cpu", 3),
        "ingest_s_per_doc": by_size("ingest_s_per_doc", 4),
        "ingest_cpu_s_per_doc": by_size("ingest_cpu_s_per_doc", 4),
        "peak_rss_ingest_mb": by_size("peak_rss_ingest_mb", 1),
        # max/min seconds per document across sizes (target ≤ 1.2)
        "s_per_doc_spread": spread("ingest_s_per_doc"),
        # the same in CPU seconds, which a busy shared machine disturbs far less
        "cpu_s_per_doc_spread": spread("ingest_cpu_s_per_doc"),
        "results": results,
    }
    write_outputs(out_dir, {RESULT_FILE: summary})
    return summary


def panels(results: list[dict[str, Any]]) -> list[Panel]:
    """Time per paper (wall and CPU, ingest and raw encode) and memory, by corpus size."""
    sizes = [r["size"] for r in results]

    def line(key: str, scale: float = 1.0) -> tuple[list[int], list[float]]:
        return sizes, [r[key] * scale for r in results]

    log_x = len(sizes) > 1 and max(sizes) / min(sizes) >= 10
    time_series = {
        "ingest, wall": line("ingest_s_per_doc", 1000),
        "raw encode, wall": line("raw_encode_s_per_doc", 1000),
        "ingest, CPU": line("ingest_cpu_s_per_doc", 1000),
        "raw encode, CPU": line("raw_encode_cpu_s_per_doc", 1000),
    }
    memory = {
        "peak RSS, ingest": line("peak_rss_ingest_mb"),
        "peak RSS, raw encode": line("peak_rss_raw_encode_mb"),
        "after model load": line("rss_after_model_mb"),
    }
    return [
        Panel(
            "Time per paper",
            "line",
            time_series,
            xlabel="papers",
            ylabel="ms per paper",
            log_x=log_x,
        ),
        Panel("Memory", "line", memory, xlabel="papers", ylabel="MB", log_x=log_x),
    ]


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench_ingest", description=__doc__)
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated corpus sizes")
    parser.add_argument("--out", type=Path, default=Path("bench-ingest"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-data", action="store_true", help="keep corpora and indexes")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result, mode, *rest = args.child
        if mode == "ingest":
            measured = measure_ingest_child(Path(rest[0]), Path(rest[1]), args.batch_size)
        else:
            measured = measure_raw_child(Path(rest[0]), int(rest[1]), args.batch_size)
        Path(result).write_text(json.dumps(measured, indent=2), encoding="utf-8")
        return 0
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    if not sizes or min(sizes) < 1:
        parser.error("--sizes needs positive integers")
    summary = run_ingest_benchmark(
        sizes, args.out, batch_size=args.batch_size, seed=args.seed, keep_data=args.keep_data
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}, indent=2))
    return 0


if __name__ == "__main__":
    from scholia.offline import apply_offline_env
    from scholia.settings import get_settings

    apply_offline_env(get_settings().data_dir)
    sys.exit(main())
