"""What eval's runs and benchmarks share: the one writer of results (JSON, JSON Lines, Markdown
from the Jinja2 templates in eval/templates with tables by tabulate, charts by matplotlib), progress
bars, a report's head (the machine), statistics, ratios, a served app, the dev suite's questions."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jinja2
import numpy
from tabulate import tabulate

from eval.suite import SUITES_DIR, load_suite
from scholia.settings import Settings

# The instruction sets the engine and torch choose their kernels by
CPU_FLAGS = re.compile(r"sse4_2|avx2?|fma|f16c|avx_vnni|avx512(f|bw|vl|_vnni|_bf16|_fp16)|amx_\w+")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def begin(**parameters: Any) -> dict[str, Any]:
    """A report's head: when it started, what it measures with, on which machine."""
    return {"started": now(), **parameters, "machine": describe_machine()}


def describe_machine() -> dict[str, Any]:
    """What a benchmark's numbers depend on: CPU and its flags, cores, memory, load, GPUs."""
    import psutil
    import torch

    from assistant.engine import read_cpu

    cpu = read_cpu()
    query = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"]
    try:
        gpus = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        gpus = ""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpu": cpu.model if cpu.model != "unknown" else platform.processor() or platform.machine(),
        "cpu_flags": sorted(flag for flag in cpu.flags if CPU_FLAGS.fullmatch(flag)),
        "gpu": [line.strip() for line in gpus.splitlines() if line.strip()],
        "torch_threads": torch.get_num_threads(),
        "torch_cuda": bool(torch.cuda.is_available()),
    }


def ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    """a[key] ÷ b[key] (e.g. a pipeline's p50 over its raw baseline's); None when either lacks it."""
    if a.get(key) is None or not b.get(key):
        return None
    return round(float(a[key]) / float(b[key]), 3)


def ratios(a: dict[str, Any], b: dict[str, Any], name: str = "ratio") -> dict[str, float | None]:
    return {f"{name}_{q}": ratio(a, b, q) for q in ("p50", "p95")}


def stats(values: Sequence[float], digits: int = 3) -> dict[str, float | int | None]:
    """n, p50, p95, p99 (interpolated), mean, min and max, rounded; None without values."""
    figures: dict[str, float | int | None] = {"n": len(values)}
    if not values:
        return figures | dict.fromkeys(("p50", "p95", "p99", "mean", "min", "max"))
    p50, p95, p99 = (float(p) for p in numpy.percentile(values, (50, 95, 99)))
    exact = {"p50": p50, "p95": p95, "p99": p99, "mean": sum(values) / len(values)}
    exact |= {"min": min(values), "max": max(values)}
    return figures | {key: round(value, digits) for key, value in exact.items()}


def check_index(services: Any, settings: Settings, error: type[Exception] = RuntimeError) -> None:
    if services.store.count() == 0:
        raise error(f"The index in {settings.data_dir} is empty: run `scholia ingest` first.")


def check_loopback(url: str) -> str:
    """The URL without a trailing slash; a ValueError when it leaves this machine."""
    if urlparse(url).hostname not in LOOPBACK:
        raise ValueError(f"{url} is not a loopback address; this benchmark stays on this machine")
    return url.rstrip("/")


def auth_headers(settings: Settings) -> dict[str, str]:
    from assistant.api.main import api_key_of

    key = api_key_of(settings)
    return {"Authorization": f"Bearer {key}"} if key else {}


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """The app under uvicorn in a thread on a free loopback port; yields its base URL."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def dev_questions(count: int | None = None, *, answerable: bool = False) -> list[str]:
    """The dev suite's first `count` answerable questions, or `count` cycled through all."""
    questions = load_suite(SUITES_DIR / "dev.jsonl").questions
    if answerable:
        return [q.question for q in questions if q.answerable][:count]
    return [questions[i % len(questions)].question for i in range(count or len(questions))]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"
    return str(value)


def flat(value: Any) -> str:
    """A nested value on one line: `key: value; key: [value, value]`."""
    if isinstance(value, dict):
        return "; ".join(f"{key}: {flat(item)}" for key, item in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(flat(item) for item in value) + "]"
    return fmt(value)


def cut(text: str, width: int) -> str:
    """One line of at most `width` characters, safe in a table cell."""
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= width else text[: width - 1] + "…"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    return tabulate(cells, headers=list(header), tablefmt="github", disable_numparse=True) + "\n"


def block_table(blocks: Mapping[str, Mapping[str, Any]], columns: Mapping[str, str]) -> str:
    """One row per labelled block; `columns`: header → the block's key (the first: the label)."""
    keys = list(columns.values())[1:]
    rows = [[label, *(block.get(key) for key in keys)] for label, block in blocks.items()]
    return table(list(columns), rows)


_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)
_templates.globals |= {"table": table, "block_table": block_table}
_templates.filters |= {"fmt": fmt, "flat": flat}


def render(template: str, **context: Any) -> str:
    return _templates.get_template(template).render(**context)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The whole lines of a file a killed run may have left torn; the torn tail is cut off."""
    if not path.is_file():
        return []
    records, good = [], 0
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break
            try:
                records.append(json.loads(raw))
            except (json.JSONDecodeError, UnicodeDecodeError):
                break
            good += len(raw)
    if good != path.stat().st_size:
        os.truncate(path, good)
    return records


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """On disk at once: a killed run keeps every line written before."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def progress(enabled: bool | None, **options: Any) -> Any:
    """A tqdm bar on stderr; `enabled` None: when stderr is a terminal."""
    from tqdm import tqdm

    return tqdm(disable=not (sys.stderr.isatty() if enabled is None else enabled), **options)


@dataclass
class Panel:
    """One chart. `kind`: "bar" (one bar per label for each series of heights), "hist" (each
    series is values), "line" or "scatter" (each series is (xs, ys))."""

    title: str
    kind: str
    series: dict[str, Any]
    labels: list[str] = field(default_factory=list)  # "bar": the label under each group of bars
    xlabel: str = ""
    ylabel: str = ""
    log_x: bool = False
    log_y: bool = False
    bins: int | list[float] = 20
    ylim: tuple[float, float] | None = None
    marks: dict[str, float] = field(default_factory=dict)  # vertical lines: legend label → x


def write_outputs(out_dir: Path, outputs: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, content in outputs.items():
        if name.endswith(".json"):
            text = json.dumps(content, indent=2, ensure_ascii=False, default=str) + "\n"
            (out_dir / name).write_text(text, encoding="utf-8")
        elif name.endswith(".png"):
            write_figure(out_dir / name, content)
        else:
            (out_dir / name).write_text(content, encoding="utf-8")


def write_benchmark(out_dir: Path, name: str, report: dict, panels: list, **context: Any) -> None:
    report["finished"] = now()
    markdown = render(f"{name}.md.j2", **report, **context)
    write_outputs(out_dir, {f"{name}.json": report, f"{name}.md": markdown, f"{name}.png": panels})


def write_figure(path: Path, panels: list[Panel], columns: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.5 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        _draw(ax, panel)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _draw(ax: Any, panel: Panel) -> None:
    width = 0.8 / max(len(panel.series), 1)  # "bar": a group for each label, a bar per series
    for index, (label, data) in enumerate(panel.series.items()):
        if panel.kind == "bar":  # a missing height is 0
            xs = [x + index * width for x in range(len(panel.labels))]
            ax.bar(xs, [height or 0.0 for height in data], width, label=label)
        elif panel.kind == "hist":
            ax.hist(data, bins=panel.bins, label=label, edgecolor="white")
        elif panel.kind == "scatter":
            ax.scatter(*data, s=8, alpha=0.6, label=label)
        elif panel.kind == "line":
            ax.plot(*data, marker="o", label=label)
    if panel.kind == "bar":
        middle = width * (len(panel.series) - 1) / 2
        ticks = [x + middle for x in range(len(panel.labels))]
        ax.set_xticks(ticks, panel.labels, rotation=20, ha="right")
        ax.margins(y=0.25)  # room above the bars for the legend, in one row along the top
        if panel.series:
            ax.legend(fontsize=8, loc="upper center", ncols=len(panel.series))
    for label, x in panel.marks.items():
        ax.axvline(x, color="grey", linestyle=":", label=label)
    ax.set(title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel)
    ax.title.set_fontsize(9)
    if panel.log_x:  # (line charts) a tick at each x, as a plain number
        ax.set_xscale("log")
        xs = sorted({x for line_xs, _ in panel.series.values() for x in line_xs})
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
    if panel.log_y:
        ax.set_yscale("log")
    if panel.ylim:
        ax.set_ylim(*panel.ylim)
    if panel.kind != "bar" and len(panel.series) + len(panel.marks) > 1:
        ax.legend(fontsize=8)
