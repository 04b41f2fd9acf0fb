"""What the benchmarks and run reports share: the machine, statistics, ratios, formatting, the
one output writer and its charts, memory sampling, the raw LLM baseline and a served app."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from eval.metrics import percentile
from eval.suite import SUITES_DIR, load_suite
from scholia.settings import Settings

# The instruction sets the engine and torch choose their kernels by
CPU_FLAGS = re.compile(r"sse4_2|avx2?|fma|f16c|avx_vnni|avx512(f|bw|vl|_vnni|_bf16|_fp16)|amx_\w+")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def begin(**parameters: Any) -> dict[str, Any]:
    """A report's head: when it started, what it measures with, on which machine."""
    return {"started": now(), **parameters, "machine": describe_machine()}


def describe_machine() -> dict[str, Any]:
    """What a benchmark's numbers depend on: CPU and its flags, cores, memory, load, GPUs."""
    import psutil
    import torch

    from assistant.engine import read_cpu

    cpu = read_cpu()
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
        "gpu": _gpus(),
        "torch_threads": torch.get_num_threads(),
        "torch_cuda": bool(torch.cuda.is_available()),
    }


def _gpus() -> list[str]:
    query = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"]
    try:
        output = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in output.splitlines() if line.strip()]


def stats(values: Sequence[float], digits: int = 3) -> dict[str, float | int | None]:
    """n, p50, p95, p99, mean, min and max, rounded; None where there are no values."""
    figures: dict[str, float | None] = {f"p{q}": percentile(values, q) for q in (50, 95, 99)}
    figures |= dict.fromkeys(("mean", "min", "max"))
    if values:
        figures |= {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}
    return {"n": len(values)} | {
        k: None if v is None else round(v, digits) for k, v in figures.items()
    }


def ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    """a[key] ÷ b[key] (e.g. a pipeline's p50 over its raw baseline's); None when either lacks it."""
    if a.get(key) is None or not b.get(key):
        return None
    return round(float(a[key]) / float(b[key]), 3)


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; cells that are not text go through `fmt`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def flat(value: Any) -> str:
    """A nested value on one line: `key: value; key: [value, value]`."""
    if isinstance(value, dict):
        return "; ".join(f"{key}: {flat(item)}" for key, item in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(flat(item) for item in value) + "]"
    return fmt(value)


@dataclass
class Panel:
    """One chart. `kind`: "bar" (one bar per label for each series of heights), "hist" (each
    series is values), "line" or "scatter" (each series is (xs, ys))."""

    title: str
    kind: str
    series: dict[str, Any]
    labels: list[str] = field(default_factory=list)
    xlabel: str = ""
    ylabel: str = ""
    log_x: bool = False
    log_y: bool = False
    bins: int | list[float] = 20
    ylim: tuple[float, float] | None = None
    marks: dict[str, float] = field(default_factory=dict)  # vertical lines: legend label → x


def write_outputs(out_dir: Path, outputs: dict[str, Any]) -> None:
    """The one writer of results: `name.json` ← data, `name.png` ← panels, else text."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, content in outputs.items():
        if name.endswith(".json"):
            text = json.dumps(content, indent=2, ensure_ascii=False) + "\n"
            (out_dir / name).write_text(text, encoding="utf-8")
        elif name.endswith(".png"):
            write_figure(out_dir / name, content)
        else:
            (out_dir / name).write_text(content, encoding="utf-8")


def write_benchmark(out_dir: Path, name: str, report: dict, panels: list, **context: Any) -> None:
    """name.json ← the report; name.md ← templates/name.md.j2 filled from the report and
    `context`, showing name.png ← the panels."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters |= {"fmt": fmt, "flat": flat}
    report["finished"] = now()
    markdown = env.get_template(f"{name}.md.j2").render(report | context)
    markdown += f"\n![{name}]({name}.png)\n"
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
    if panel.kind == "bar":
        width = 0.8 / max(len(panel.series), 1)
        for index, (label, heights) in enumerate(panel.series.items()):
            xs = [x + index * width for x in range(len(panel.labels))]
            ax.bar(xs, [height or 0.0 for height in heights], width, label=label)
        middle = width * (len(panel.series) - 1) / 2
        ticks = [x + middle for x in range(len(panel.labels))]
        ax.set_xticks(ticks, panel.labels, rotation=20, ha="right")
    for label, data in panel.series.items() if panel.kind != "bar" else ():
        if panel.kind == "hist":
            ax.hist(data, bins=panel.bins, label=label, edgecolor="white")
        elif panel.kind == "scatter":
            ax.scatter(*data, s=8, alpha=0.6, label=label)
        else:
            ax.plot(*data, marker="o", label=label)
    for label, x in panel.marks.items():
        ax.axvline(x, color="grey", linestyle=":", label=label)
    ax.set(title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel)
    ax.title.set_fontsize(9)
    if panel.log_x:
        ax.set_xscale("log")
    if panel.log_y:
        ax.set_yscale("log")
    if panel.ylim:
        ax.set_ylim(*panel.ylim)
    if len(panel.series) + len(panel.marks) > 1:
        ax.legend(fontsize=8)


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


def dev_questions(
    count: int | None = None, *, answerable: bool = False, fact: bool = False
) -> list[str]:
    """The dev suite's questions: the first `count` answerable ones, or `count` cycled through
    all (or the fact ones)."""
    questions = load_suite(SUITES_DIR / "dev.jsonl").questions
    if answerable:
        return [q.question for q in questions if q.answerable][:count]
    chosen = [q.question for q in questions if q.type == "fact" or not fact]
    return [chosen[i % len(chosen)] for i in range(count or len(chosen))]


async def identical_prompts(services: Any, questions: list[str]) -> list[tuple[str, Any]]:
    """(question, the messages /ask sends the LLM for it): the raw baseline's prompts. Questions
    the pipeline declines before generating are left out: they never reach the LLM."""
    from assistant.generate import answer_messages
    from assistant.llm import as_openai_messages
    from assistant.schemas import AskRequest

    prompts = []
    for question in questions:
        prepared = await services.assistant.prepare(AskRequest(question=question))
        if prepared.confident:
            messages = answer_messages(prepared.question, prepared.packed)
            prompts.append((question, as_openai_messages(messages)))
    return prompts


class RawLLM:
    """The LLM server called directly, with /ask's model, max_tokens and temperature."""

    def __init__(self, settings: Settings, url: str, model: str, timeout_s: float) -> None:
        import openai

        key = settings.llm.api_key.get_secret_value()
        self.client = openai.AsyncOpenAI(
            base_url=url, api_key=key, timeout=timeout_s, max_retries=0
        )
        self.model, self.settings, self.timeout_s = model, settings.llm, timeout_s

    async def complete(self, messages: Any, *, stream: bool, max_tokens: int = 0) -> dict[str, Any]:
        """ms to the first token and to the end, prompt and completion tokens."""
        from openai.types.chat import ChatCompletion

        tick = time.perf_counter()
        first: float | None = None
        extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if stream else {}
        reply = await self.client.chat.completions.create(
            model=self.model,
            messages=messages,
            max_tokens=max_tokens or self.settings.max_answer_tokens,
            temperature=self.settings.temperature,
            stream=stream,
            **extra,
        )
        usage = getattr(reply, "usage", None)
        if not isinstance(reply, ChatCompletion):
            async for chunk in reply:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter()
                usage = chunk.usage or usage
        end = time.perf_counter()
        return {
            "ttft_ms": ((first or end) - tick) * 1000,
            "ms": (end - tick) * 1000,
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
        }
