"""One real `scholia serve` for the e2e session: it ingests, starts the packaged vLLM, serves.

The converted model and vLLM's compile cache are borrowed (symlinked) from the main data
directory that `scholia model prepare` filled; the index is built fresh in a temporary one.
`scholia_app` starts further apps (own settings, the live server's vLLM) for single tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import psutil
import pytest

from scholia.settings import PROJECT_ROOT, get_settings
from tests.servers import free_port, scholia_serve, wait_http

READY_TIMEOUT_S = 1200
APP_READY_TIMEOUT_S = 300  # an app using a running vLLM: load the embedder, maybe ingest


@dataclass
class LiveServer:
    url: str
    llm_url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path


def ask(server: LiveServer, question: str, **extra: object) -> dict[str, object]:
    """`POST /ask` on the live server; it must answer 200."""
    response = httpx.post(server.url + "/ask", json={"question": question, **extra}, timeout=300)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


# Package scope: vLLM (which keeps a core busy while idle on CPU) stops when tests/e2e is done.
@pytest.fixture(scope="package")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    main = get_settings()
    if not (main.models_dir / "qwen2.5-coder-0.5b-instruct" / "config.json").is_file():
        pytest.fail(
            "the packaged model is not prepared: run `scholia model prepare` (make test does)"
        )
    data_dir = tmp_path_factory.mktemp("e2e-data")
    (data_dir / "cache").mkdir()
    (data_dir / "models").symlink_to(main.models_dir)
    for cache in ("vllm", "torchinductor"):  # compile caches: only the first start pays
        (main.data_dir / "cache" / cache).mkdir(parents=True, exist_ok=True)
        (data_dir / "cache" / cache).symlink_to(main.data_dir / "cache" / cache)
    app_port, llm_port = free_port(), free_port()
    env = {
        **os.environ,
        "SCHOLIA_DATA_DIR": str(data_dir),
        "SCHOLIA_LLM_PORT": str(llm_port),
        "SCHOLIA_LLM_VLLM_PYTHON": str(main.llm.vllm_python),
    }
    env.pop("SCHOLIA_LLM_URL", None)
    log = data_dir / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "assistant.cli", "serve", "--port", str(app_port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LiveServer(
        f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{llm_port}/v1", data_dir, process, log
    )
    try:
        wait_http(server.url + "/ready", server.process, log, READY_TIMEOUT_S, interval=3)
        yield server
    finally:
        _stop(server)


@dataclass
class AppProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def scholia_app(folder: Path, env: dict[str, str]) -> Iterator[AppProcess]:
    """`scholia serve` with `env` over this process's environment, data in `folder/data`, until
    /ready is 200; stopped with Ctrl-C afterwards. Pass SCHOLIA_LLM_URL (the live server's vLLM)
    so that no second vLLM starts."""
    assert env.get("SCHOLIA_LLM_URL"), "a second vLLM does not fit on this machine"
    # The live server warmed up and measured the engine; these apps skip it (~40 s each on a
    # slow CPU) unless a test asks for it.
    env = {"SCHOLIA_LLM_WARM_UP": "false", **env}
    log = folder / "serve.log"
    with scholia_serve(folder / "data", env, log) as (url, process):
        app = AppProcess(url, process, log)
        wait_http(app.url + "/ready", process, log, APP_READY_TIMEOUT_S, interval=2)
        yield app


def _stop(server: LiveServer) -> None:
    """SIGTERM `scholia serve` (what docker, systemd and kill send): it must exit 0 and take its
    vLLM down with it (checked, so it can fail)."""
    if server.process.poll() is not None:
        return  # it never became ready and stopped itself: the start-up failure is the error
    engine = psutil.Process(server.process.pid).children(recursive=True)
    assert any("vllm" in " ".join(p.cmdline()) for p in engine), "no vLLM under scholia serve"
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            code = server.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=30)
            pytest.fail("scholia serve did not stop within 90 s of SIGTERM")
        assert code == 0, f"scholia serve exited {code} after SIGTERM"
    llm = urlparse(server.llm_url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = [p.pid for p in engine if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        with socket.socket() as sock:
            closed = sock.connect_ex((llm.hostname or "127.0.0.1", llm.port or 0)) != 0
        if closed and not left:
            return
        time.sleep(1)
    pytest.fail(f"after `scholia serve` stopped: vLLM port open {not closed}, processes {left}")
