"""The vLLM supervisor, with stand-in servers instead of vLLM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from assistant.vllm_server import VllmServer, VllmServerError
from scholia.settings import LLMSettings, Settings
from tests.assistant.test_engine import EPYC_AVX2, EPYC_BF16

MODEL = "qwen2.5-coder-0.5b-instruct"

# A stand-in for the vLLM venv's python: serves GET /v1/models like the real server, after an
# optional delay, and starts a grandchild that ignores SIGTERM (like a stuck engine worker).
FAKE_SERVER = r"""
import json, os, signal, subprocess, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
name = args[args.index("--served-model-name") + 1]
mode = os.environ.get("FAKE_MODE", "serve")
print("fake vllm starting", flush=True)
if mode == "crash":
    print("RuntimeError: boom in engine core", flush=True)
    sys.exit(3)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
open(os.environ["FAKE_CHILD_PID"], "w").write(str(child.pid))
if mode == "hang":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(600)
time.sleep(float(os.environ.get("FAKE_DELAY", "0")))
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": name}]}).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _settings(tmp_path: Path, port: int = 8100, python: Path | None = None) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        llm=LLMSettings(
            vllm_python=python or tmp_path / "venv" / "bin" / "python",
            port=port,
            kv_cache_gib=3,
            max_model_len=2048,
            start_timeout_s=30,
        ),
    )


def fake_vllm_python(tmp_path: Path) -> Path:
    """A stand-in for the vLLM venv's python that runs FAKE_SERVER."""
    script = tmp_path / "fake_vllm.py"
    script.write_text(FAKE_SERVER)
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    python.chmod(0o755)
    return python


def _fake_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str = "serve") -> Settings:
    settings = _settings(tmp_path, port=_free_port(), python=fake_vllm_python(tmp_path))
    model = settings.models_dir / MODEL
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    monkeypatch.setenv("FAKE_MODE", mode)
    monkeypatch.setenv("FAKE_DELAY", "1.5")
    monkeypatch.setenv("FAKE_CHILD_PID", str(tmp_path / "child.pid"))
    return settings


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its new parent) counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for_file(path: Path, seconds: float = 10.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text():
            return path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_command_holds_model_name_address_and_limits(tmp_path: Path) -> None:
    settings = _settings(tmp_path, port=8123)
    cmd = VllmServer(settings, cpu=EPYC_BF16).command()
    assert cmd[:3] == [str(settings.llm.vllm_python), "-m", "vllm.entrypoints.openai.api_server"]

    def flag(name: str) -> str:
        return cmd[cmd.index(name) + 1]

    assert flag("--model") == str(settings.models_dir / MODEL)
    assert flag("--served-model-name") == settings.llm.model
    assert flag("--host") == "127.0.0.1"
    assert flag("--port") == "8123"
    assert flag("--max-model-len") == "2048"
    assert flag("--dtype") == "bfloat16"
    assert "--enforce-eager" not in cmd
    eager = VllmServer(
        settings, cpu=EPYC_BF16, enforce_eager=True, extra_args=("--seed", "1")
    ).command()
    assert "--enforce-eager" in eager
    assert eager[-2:] == ["--seed", "1"]


def test_an_avx2_only_cpu_gets_float32_eager_and_small_prefill_steps(tmp_path: Path) -> None:
    server = VllmServer(_settings(tmp_path), cpu=EPYC_AVX2)
    cmd = server.command()
    assert cmd[cmd.index("--dtype") + 1] == "float32"
    assert "--enforce-eager" in cmd
    assert cmd[cmd.index("--max-num-batched-tokens") + 1] == "512"
    env = server.env()
    assert int(env["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"]) >= 300
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0"


def test_env_keeps_caches_in_the_data_dir_and_stays_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    settings = _settings(tmp_path)
    env = VllmServer(settings).env()
    data = settings.data_dir
    assert env["VLLM_CACHE_ROOT"] == str(data / "cache" / "vllm")
    for key in ("TMPDIR", "HF_HOME", "TORCHINDUCTOR_CACHE_DIR", "VLLM_CONFIG_ROOT"):
        assert Path(env[key]).is_relative_to(data), key
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert env["VLLM_USE_AOT_COMPILE"] == "0"
    for key in ("VLLM_NO_USAGE_STATS", "DO_NOT_TRACK", "HF_HUB_OFFLINE"):
        assert env[key] == "1", key
    assert "PYTHONPATH" not in env


def test_base_url(tmp_path: Path) -> None:
    assert VllmServer(_settings(tmp_path, port=8111)).base_url == "http://127.0.0.1:8111/v1"


@pytest.fixture
def models_endpoint() -> Iterator[tuple[int, list[str]]]:
    """A tiny HTTP server answering GET /v1/models with a mutable list of model ids."""
    served: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"data": [{"id": m} for m in served]}).encode()
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], served
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_start_reuses_a_server_already_serving_the_model(
    tmp_path: Path, models_endpoint: tuple[int, list[str]]
) -> None:
    port, served = models_endpoint
    served.append(MODEL)
    server = VllmServer(_settings(tmp_path, port=port), log=lambda _: None)
    server.start()
    assert server.reused and server.pid is None
    assert server.wait_ready(timeout=5) < 5
    assert server.is_running()
    server.stop()  # not ours: leaves it running
    assert server.is_running()


def test_start_refuses_a_port_serving_another_model(
    tmp_path: Path, models_endpoint: tuple[int, list[str]]
) -> None:
    port, served = models_endpoint
    served.append("some-other-model")
    with pytest.raises(VllmServerError, match="some-other-model"):
        VllmServer(_settings(tmp_path, port=port), log=lambda _: None).start()


def test_start_refuses_a_port_held_by_something_else(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(VllmServerError, match="in use"):
            VllmServer(_settings(tmp_path, port=port), log=lambda _: None).start()


def test_start_requires_venv_and_model(tmp_path: Path) -> None:
    settings = _settings(tmp_path, port=_free_port())
    with pytest.raises(VllmServerError, match="make setup"):
        VllmServer(settings, log=lambda _: None).start()
    settings.llm.vllm_python.parent.mkdir(parents=True)
    settings.llm.vllm_python.write_text("#!/bin/sh\n")
    with pytest.raises(VllmServerError, match="model prepare"):
        VllmServer(settings, log=lambda _: None).start()


def test_lifecycle_start_ready_stop_kills_the_process_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _fake_vllm(tmp_path, monkeypatch)
    messages: list[str] = []
    with VllmServer(settings, log=messages.append) as server:
        assert server.is_running() and not server.reused
        pid = server.pid
        assert pid is not None
        child = int((tmp_path / "child.pid").read_text())
        assert _alive(child)
    assert server.pid is None
    assert _wait_gone(pid) and _wait_gone(child)
    assert any("ready at" in m for m in messages)
    log = (settings.logs_dir / "vllm.log").read_text()
    assert "starting:" in log and "fake vllm starting" in log


def test_wait_ready_fails_fast_with_the_log_tail_when_vllm_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _fake_vllm(tmp_path, monkeypatch, mode="crash")
    server = VllmServer(settings, log=lambda _: None)
    server.start()
    started = time.monotonic()
    with pytest.raises(VllmServerError, match="exited with code 3") as info:
        server.wait_ready(timeout=30)
    assert time.monotonic() - started < 10
    assert "boom in engine core" in str(info.value)
    server.stop()


def test_timeout_reports_and_stop_escalates_to_sigkill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _fake_vllm(tmp_path, monkeypatch, mode="hang")
    server = VllmServer(settings, log=lambda _: None)
    server.start()
    with pytest.raises(VllmServerError, match="not ready after"):
        server.wait_ready(timeout=1.5)
    pid = server.pid
    assert pid is not None
    child = int(_wait_for_file(tmp_path / "child.pid"))
    server.stop(grace_s=0.5)
    assert _wait_gone(pid) and _wait_gone(child)


# ----------------------------------------------------------------------------- watchdog


def _restartable(settings: Settings, **limits: float) -> Settings:
    return settings.model_copy(update={"llm": settings.llm.model_copy(update=limits)})


def _wait_until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {seconds} s")
        time.sleep(0.05)


def _said(messages: list[str], text: str) -> bool:
    return any(text in message for message in messages)


def _watchdog_alive() -> bool:
    return any(t.name == "vllm-watchdog" and t.is_alive() for t in threading.enumerate())


def test_watchdog_restarts_a_killed_server_each_time_outside_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One restart allowed per 0.5 s: the second kill comes after the first restart is ready
    # (the fake takes 1.5 s to serve), so it is outside the window and allowed too.
    settings = _restartable(
        _fake_vllm(tmp_path, monkeypatch),
        restart_max=1,
        restart_window_s=0.5,
        restart_backoff_s=0.1,
    )
    messages: list[str] = []
    with VllmServer(settings, log=messages.append, watch_interval_s=0.05) as server:
        pids = [server.pid]
        for restart in (1, 2):
            killed = pids[-1]
            assert killed is not None
            os.killpg(killed, signal.SIGKILL)
            _wait_until(partial(_said, messages, f"vLLM is back (restart {restart},"))
            assert server.is_running() and server.pid not in pids
            pids.append(server.pid)
        assert server.restarts == 2 and not server.gave_up
        last = server.pid
    assert last is not None and _wait_gone(last)
    assert sum("exited unexpectedly (killed by SIGKILL)" in m for m in messages) == 2
    assert (settings.logs_dir / "vllm.log").read_text().count("fake vllm starting") == 3


def test_watchdog_backs_off_and_gives_up_after_the_restart_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _restartable(
        _fake_vllm(tmp_path, monkeypatch),
        restart_max=2,
        restart_window_s=60,
        restart_backoff_s=0.1,
    )
    messages: list[str] = []
    with VllmServer(settings, log=messages.append, watch_interval_s=0.05) as server:
        monkeypatch.setenv("FAKE_MODE", "crash")  # every later start dies at once, like a bad model
        first = server.pid
        assert first is not None
        os.killpg(first, signal.SIGKILL)
        _wait_until(lambda: server.gave_up)
        assert not _watchdog_alive()
        assert server.restarts == 2 and not server.is_running() and server.pid is None
    delays = re.findall(r"restarting it in ([\d.]+) s", "\n".join(messages))
    assert delays == ["0.1", "0.2"]  # doubles with each restart in the window
    assert "not restarting it again" in messages[-1]
    assert "boom in engine core" in messages[-1]  # the crash is shown, not just counted
    assert (settings.logs_dir / "vllm.log").read_text().count("boom in engine core") == 2


def test_stop_is_not_a_crash_and_cancels_a_pending_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _restartable(_fake_vllm(tmp_path, monkeypatch), restart_backoff_s=60)
    messages: list[str] = []
    with VllmServer(settings, log=messages.append, watch_interval_s=0.05) as server:
        assert _watchdog_alive()
    assert not _watchdog_alive()
    assert not any("unexpectedly" in m for m in messages)

    server = VllmServer(settings, log=messages.append, watch_interval_s=0.05)
    with server:
        pid = server.pid
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        _wait_until(partial(_said, messages, "restarting it in 60 s"))
    assert not _watchdog_alive()
    assert server.restarts == 0 and server.pid is None


def test_no_watchdog_when_restarts_are_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _restartable(_fake_vllm(tmp_path, monkeypatch), restart_max=0)
    with VllmServer(settings, log=lambda _: None, watch_interval_s=0.05) as server:
        assert not _watchdog_alive()
        pid = server.pid
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        _wait_until(lambda: not server.is_running())
        assert server.restarts == 0
