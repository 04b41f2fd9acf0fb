"""What the benchmarks and run reports share beyond the writer (eval.output): the machine, ratios,
the raw LLM baseline, a served app, the dev suite's questions."""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import openai
from openai.types.chat import ChatCompletion

from eval.output import now
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


async def identical_prompts(services: Any, questions: list[str]) -> list[tuple[str, Any]]:
    """(question, the messages /ask sends the LLM for it), but for those declined before that."""
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
        key = settings.llm.api_key.get_secret_value()
        self.model, self.settings, self.timeout_s = model, settings.llm, timeout_s
        self.client = openai.AsyncOpenAI(
            base_url=url, api_key=key, timeout=timeout_s, max_retries=0
        )

    async def complete(self, messages: Any, *, stream: bool, max_tokens: int = 0) -> dict[str, Any]:
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
