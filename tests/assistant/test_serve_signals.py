"""`scholia serve` stops the vLLM it started on SIGINT, SIGTERM and SIGHUP, and exits 0.

The real `scholia serve` process runs here with a stand-in for the vLLM environment's python
(the fake server of test_vllm_server, which also leaves a SIGTERM-ignoring grandchild, like a
stuck engine worker): what is tested is the process tree and the signal handling. The e2e
package stops its real `scholia serve` + vLLM with SIGTERM and checks the same (tests/e2e).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from assistant.model_prep import model_dir, write_marker
from scholia.settings import PROJECT_ROOT, Settings
from tests.assistant.test_vllm_server import fake_vllm_python
from tests.servers import free_port, wait_http

STOP_TIMEOUT_S = 60


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    url: str
    llm_port: int
    child_pid_file: Path
    log: Path


StartServe = Callable[..., Serve]


@pytest.fixture
def serve_env(tmp_path: Path, indexed_settings: Settings) -> dict[str, str]:
    """A data dir with the bundled corpus indexed and a (stand-in) converted model."""
    data = tmp_path / "data"
    shutil.copytree(indexed_settings.data_dir, data, ignore=shutil.ignore_patterns("*.lock"))
    settings = Settings(data_dir=data)
    folder = model_dir(settings)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    write_marker(folder, 0.0)
    python = fake_vllm_python(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHOLIA_")}
    return {
        **env,
        "SCHOLIA_DATA_DIR": str(data),
        "SCHOLIA_LLM_VLLM_PYTHON": str(python),
        "SCHOLIA_LLM_PORT": str(free_port()),
        "FAKE_CHILD_PID": str(tmp_path / "child.pid"),
    }


@pytest.fixture
def start_serve(serve_env: dict[str, str], tmp_path: Path) -> Iterator[StartServe]:
    started: list[Serve] = []

    def start(**extra: str) -> Serve:
        port = free_port()
        log = tmp_path / f"serve-{len(started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "assistant.cli", "serve", "--port", str(port)],
                cwd=PROJECT_ROOT,
                env={**serve_env, **extra},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        serve = Serve(
            process,
            f"http://127.0.0.1:{port}",
            int(serve_env["SCHOLIA_LLM_PORT"]),
            Path(serve_env["FAKE_CHILD_PID"]),
            log,
        )
        started.append(serve)
        return serve

    yield start
    for serve in started:  # whatever a failed test left behind
        if serve.process.poll() is None:
            os.killpg(serve.process.pid, signal.SIGKILL)
            serve.process.wait()


def _stop_and_check(serve: Serve, sig: signal.Signals) -> None:
    engine_pids = [p.pid for p in psutil.Process(serve.process.pid).children(recursive=True)]
    assert engine_pids, "serve started no vLLM process"
    serve.process.send_signal(sig)
    try:
        code = serve.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"scholia serve still running {STOP_TIMEOUT_S} s after {sig.name}")
    log = serve.log.read_text(errors="replace")
    assert code == 0, f"exit code {code} after {sig.name}:\n{log[-3000:]}"
    left = [pid for pid in engine_pids if psutil.pid_exists(pid) and _alive(pid)]
    assert not left, f"vLLM processes left after {sig.name}: {left}"
    child = int(serve.child_pid_file.read_text())
    assert not _alive(child), "the SIGTERM-ignoring engine worker survived"
    assert _port_closed(serve.llm_port), "the vLLM port still answers"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _port_closed(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_while_serving_stops_vllm_and_exits_0(
    start_serve: StartServe, sig: signal.Signals
) -> None:
    serve = start_serve()
    wait_http(serve.url + "/health", serve.process, serve.log, timeout=180)
    _stop_and_check(serve, sig)


def test_a_stop_signal_while_vllm_starts_stops_it_too(start_serve: StartServe) -> None:
    serve = start_serve(FAKE_DELAY="60")
    deadline = time.monotonic() + 120
    while not serve.child_pid_file.exists():  # the engine is up, its HTTP server not yet
        assert serve.process.poll() is None, serve.log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, "vLLM stand-in never started"
        time.sleep(0.5)
    _stop_and_check(serve, signal.SIGTERM)


def test_serve_keeps_an_idle_connection_open_past_a_clients_pool_expiry(
    start_serve: StartServe,
) -> None:
    """A client pool retires an idle connection after its own timeout (httpx: 5 s). A server that
    closes it first races the client's next request on it, which then fails with a reset (seen
    as ReadError under load); so the server must hold the connection open longer."""
    import http.client

    serve = start_serve()
    wait_http(serve.url + "/health", serve.process, serve.log, timeout=180)
    connection = http.client.HTTPConnection("127.0.0.1", int(serve.url.rsplit(":", 1)[1]))
    for pause_s in (0.0, 6.0):  # 6 s: past httpx's keep-alive expiry, and uvicorn's default
        time.sleep(pause_s)
        connection.request("GET", "/health")
        response = connection.getresponse()
        assert response.status == 200, response.read()
        response.read()
    connection.close()
    _stop_and_check(serve, signal.SIGTERM)
