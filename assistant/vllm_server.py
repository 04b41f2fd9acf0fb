"""Supervise a local vLLM (CPU) OpenAI-compatible server for the converted chat model.

vLLM lives in its own environment (`settings.llm.vllm_python`) and runs as a child process in
its own process group, logging to `<logs_dir>/vllm.log`. Its compile caches live under the data
directory (`cache/vllm`, `cache/torchinductor`), so only the first start pays for compilation.
A watchdog thread restarts the server when it dies without `stop()` (killed, crashed), with a
backoff and a cap on restarts within a window (`settings.llm.restart_*`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from assistant.engine import CpuInfo, EngineProfile, read_cpu, resolve_engine
from assistant.model_prep import model_dir, subprocess_env
from scholia.settings import Settings

Log = Callable[[str], None]

# Engine choices (dtype, compiled or eager, threads, executor) follow the CPU: see engine.py.
# vLLM 0.32's AOT compile cache cannot be reloaded on CPU ("'function' object has no attribute
# 'finalize_loading'": it recompiles every start), so VLLM_USE_AOT_COMPILE=0 lets torch
# inductor's own on-disk cache (TORCHINDUCTOR_CACHE_DIR) do it.
# --max-num-seqs 8: one user at a time; keeps the scheduler's and sampler's buffers small.
# --disable-log-stats / --uvicorn-log-level warning: keep vllm.log readable.
MAX_NUM_SEQS = 8
STOP_GRACE_S = 15.0
LOG_TAIL_CHARS = 4000
WATCH_INTERVAL_S = 2.0
# Talk to localhost directly, whatever HTTP(S)_PROXY says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


STRUCTURED_OUTPUTS_CONFIG = '{"backend": "xgrammar", "disable_any_whitespace": true}'


class VllmServerError(RuntimeError):
    """The vLLM server could not be started or did not become ready."""


def _print(message: str) -> None:
    print(f"[vllm] {message}", file=sys.stderr, flush=True)


class VllmServer:
    """Start, wait for, and stop one vLLM server; usable as a context manager.

    Reuse: when `start()` finds the port already answering `GET /v1/models` with
    `settings.llm.model` among the served models (a server left running by a previous run or by
    `make serve`), it reuses that server instead of starting a second one — the machine has room
    for only one, and a start costs minutes. A reused server is not ours: `stop()` leaves it
    running. When the port is taken by anything else (another model, another program),
    `start()` raises `VllmServerError` rather than guess.
    """

    def __init__(
        self,
        settings: Settings,
        model_path: Path | None = None,
        *,
        enforce_eager: bool | None = None,
        cpu: CpuInfo | None = None,
        extra_args: tuple[str, ...] = (),
        log: Log = _print,
        watch_interval_s: float = WATCH_INTERVAL_S,
    ) -> None:
        self.settings = settings
        self.model_path = model_path if model_path is not None else model_dir(settings)
        profile = resolve_engine(settings.llm, cpu if cpu is not None else read_cpu())
        if enforce_eager is not None:
            profile = replace(profile, enforce_eager=enforce_eager)
        self.profile = profile
        self.extra_args = extra_args
        self.log_path = settings.logs_dir / "vllm.log"
        self.reused = False
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_offset = 0
        self.watch_interval_s = watch_interval_s
        self.restarts = 0  # restarts the watchdog attempted
        self.gave_up = False  # the watchdog hit the restart cap and stopped restarting
        self._watchdog: threading.Thread | None = None
        self._stopping = threading.Event()
        # Held while the process is spawned or torn down, so a restart never races stop().
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ description
    @property
    def base_url(self) -> str:
        host = self.settings.llm.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6 literal
        return f"http://{host}:{self.settings.llm.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def command(self) -> list[str]:
        llm = self.settings.llm
        cmd = [
            str(llm.vllm_python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_path),
            "--served-model-name",
            llm.model,
            "--host",
            llm.host,
            "--port",
            str(llm.port),
            "--max-model-len",
            str(llm.max_model_len),
            *self.profile.args(),
            "--max-num-seqs",
            str(MAX_NUM_SEQS),
            "--disable-log-stats",
            # Compact JSON for the constrained answer: each whitespace token costs decode time.
            "--structured-outputs-config",
            STRUCTURED_OUTPUTS_CONFIG,
            "--uvicorn-log-level",
            "warning",
        ]
        cmd.extend(self.extra_args)
        return cmd

    def env(self) -> dict[str, str]:
        data = self.settings.data_dir
        env = subprocess_env(self.settings)
        env.update(
            VLLM_CACHE_ROOT=str(data / "cache" / "vllm"),
            VLLM_CONFIG_ROOT=str(data / "config" / "vllm"),
            TORCHINDUCTOR_CACHE_DIR=str(data / "cache" / "torchinductor"),
            VLLM_USE_AOT_COMPILE="0",
            **self.profile.env(),
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
            HF_HUB_OFFLINE="1",
            PYTHONUNBUFFERED="1",
        )
        return env

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Spawn the server (or adopt a running one, see the class docstring); returns at once."""
        if self._proc is not None and self._proc.poll() is None:
            return
        if self.reused:
            return
        served = self._served_models(timeout=2.0)
        if served is not None:
            if self.settings.llm.model in served:
                self.reused = True
                self._log(f"reusing the server already running at {self.base_url}")
                return
            raise VllmServerError(
                f"{self.base_url} already serves {served}, not {self.settings.llm.model!r}; "
                "stop it or choose another SCHOLIA_LLM_PORT"
            )
        if not self._port_free():
            raise VllmServerError(
                f"port {self.settings.llm.port} on {self.settings.llm.host} is in use by "
                "something that is not a vLLM server; choose another SCHOLIA_LLM_PORT"
            )
        python = self.settings.llm.vllm_python
        if not python.exists():
            raise VllmServerError(f"vLLM environment missing ({python}); run `make setup`")
        if not (self.model_path / "config.json").is_file():
            raise VllmServerError(
                f"no converted model in {self.model_path}; run `scholia model prepare`"
            )
        for folder in (
            self.settings.logs_dir,
            self.settings.data_dir / "cache" / "vllm",
            self.settings.data_dir / "cache" / "torchinductor",
            self.settings.data_dir / "config" / "vllm",
        ):
            folder.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        self._log_file = self.log_path.open("ab")
        self._log_offset = self._log_file.tell()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._log_file.write(f"\n===== {stamp} starting: {' '.join(cmd)}\n".encode())
        self._log_file.flush()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=str(self.settings.data_dir),
            start_new_session=True,  # own process group: stop() reaches the engine workers
        )
        self._log(f"starting vLLM (pid {self._proc.pid}), log {self.log_path}")
        self._log(describe_profile(self.profile))

    def wait_ready(self, timeout: float | None = None) -> float:
        """Poll `GET /v1/models` until it answers; return the seconds waited.

        Fails fast, with the tail of the log, if the process exits; raises on timeout
        (default `settings.llm.start_timeout_s`) without stopping the process.
        """
        limit = self.settings.llm.start_timeout_s if timeout is None else timeout
        start = time.monotonic()
        next_note = start + 15.0
        while True:
            proc = self._proc
            if proc is not None and proc.poll() is not None:
                raise VllmServerError(
                    f"vLLM exited with code {proc.returncode} before it was ready; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            served = self._served_models(timeout=2.0)
            elapsed = time.monotonic() - start
            if served is not None and self.settings.llm.model in served:
                self._log(f"ready at {self.base_url} after {elapsed:.0f} s")
                return elapsed
            if served is not None:
                raise VllmServerError(f"{self.base_url} serves {served}, not the expected model")
            if proc is None and not self.reused:
                raise VllmServerError("wait_ready() called before start() or after stop()")
            if elapsed > limit:
                raise VllmServerError(
                    f"vLLM not ready after {elapsed:.0f} s (limit {limit:.0f} s); "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() >= next_note:
                self._log(f"still starting… {elapsed:.0f} s")
                next_note += 15.0
            time.sleep(1.0)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop the watchdog, SIGTERM the server's process group, SIGKILL after `grace_s`.

        Idempotent.
        """
        self._stopping.set()
        with self._lock:
            proc = self._proc
            try:
                if proc is not None and proc.poll() is None:
                    self._signal_group(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=grace_s)
                    except subprocess.TimeoutExpired:
                        self._log(f"vLLM did not stop within {grace_s:.0f} s; killing it")
            finally:
                self._release()
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog is not threading.current_thread():
            # It sees `_stopping` within a poll (≤ ~3 s in wait_ready's loop).
            watchdog.join(timeout=30)

    def _release(self) -> None:
        """Kill what is left of the process group, reap the leader and close the log."""
        proc, self._proc = self._proc, None
        if proc is not None:
            # Stragglers in the group (engine core, workers) even if the leader exited.
            self._signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def is_running(self) -> bool:
        if self.reused:
            return self._served_models(timeout=2.0) is not None
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        self.watch()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ watchdog
    def watch(self) -> None:
        """Start the watchdog thread (idempotent); not for a reused server, or restart_max 0.

        Every `watch_interval_s` it checks the process; when it has exited without `stop()`,
        it cleans up the process group and starts the server again after
        `restart_backoff_s × 2^(restarts in the window)`. After `restart_max` restarts within
        `restart_window_s` it gives up, so a model that crashes on start does not loop forever;
        nothing then listens on the port and /ready keeps reporting the LLM down.
        """
        if self.reused or self.settings.llm.restart_max == 0:
            return
        if self._watchdog is not None and self._watchdog.is_alive():
            return
        self._stopping.clear()
        self._watchdog = threading.Thread(target=self._watch, name="vllm-watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        llm = self.settings.llm
        recent: deque[float] = deque()  # monotonic times of the restarts within the window
        while not self._stopping.wait(self.watch_interval_s):
            failure = self._unexpected_exit()
            while failure is not None:
                now = time.monotonic()
                while recent and now - recent[0] > llm.restart_window_s:
                    recent.popleft()
                if len(recent) >= llm.restart_max:
                    self.gave_up = True
                    self._log(
                        f"{failure}; {len(recent)} restarts within {llm.restart_window_s:g} s "
                        f"already (SCHOLIA_LLM_RESTART_MAX={llm.restart_max}): not restarting "
                        "it again; the LLM stays down until Scholia is restarted. Last lines of "
                        f"{self.log_path}:\n{self.log_tail(1000)}"
                    )
                    return
                delay = llm.restart_backoff_s * 2 ** len(recent)
                self._log(
                    f"{failure}; restarting it in {delay:g} s (restart {len(recent) + 1} of at "
                    f"most {llm.restart_max} within {llm.restart_window_s:g} s)"
                )
                if self._stopping.wait(delay):
                    return
                recent.append(time.monotonic())
                failure = self._restart()
                if self._stopping.is_set():
                    return

    def _unexpected_exit(self) -> str | None:
        """What happened, when the process exited without `stop()`; it is then cleaned up."""
        with self._lock:
            proc = self._proc
            if self._stopping.is_set() or proc is None or proc.poll() is None:
                return None
            self._release()
        return f"vLLM (pid {proc.pid}) exited unexpectedly ({_exit_reason(proc.returncode)})"

    def _restart(self) -> str | None:
        """Start the server again and wait for it; None when it is ready, else what failed."""
        with self._lock:
            if self._stopping.is_set():
                return None
            self.restarts += 1
            try:
                self.start()
            except VllmServerError as error:
                return f"vLLM could not be restarted: {error}"
        try:
            waited = self.wait_ready()
        except VllmServerError as error:
            with self._lock:
                if not self._stopping.is_set():
                    self._release()  # exited, or hung past the start timeout: take it down
            return f"the restarted vLLM failed: {str(error).splitlines()[0]}"
        self._log(f"vLLM is back (restart {self.restarts}, ready after {waited:.0f} s)")
        return None

    # ------------------------------------------------------------------ helpers
    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(self._log_offset, size - chars))
                return fh.read().decode("utf-8", errors="replace").strip()
        except OSError:
            return "(no log)"

    def _served_models(self, timeout: float) -> list[str] | None:
        """Model ids served at the port, or None when nothing answers there (yet)."""
        try:
            with _OPENER.open(f"{self.base_url}/models", timeout=timeout) as resp:
                if resp.status != 200:
                    return None
                payload = json.loads(resp.read())
        except (OSError, ValueError):  # URLError, refused, reset, timeout, bad JSON
            return None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            return None
        return [str(item.get("id")) for item in data if isinstance(item, dict)]

    def _port_free(self) -> bool:
        family = socket.AF_INET6 if ":" in self.settings.llm.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.settings.llm.host, self.settings.llm.port))
            except OSError:
                return False
        return True

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


def _exit_reason(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


def describe_profile(profile: EngineProfile) -> str:
    """One start-up log line: the CPU found and every engine choice."""
    cpu = profile.cpu
    flags = ",".join(cpu.describe()["flags"]) or "none of note"
    return (
        f"CPU {cpu.model} ({cpu.cores} cores, {cpu.isa}, flags {flags}): dtype {profile.dtype}, "
        f"{'eager' if profile.enforce_eager else 'compiled'}, "
        f"{profile.omp_threads} OMP thread(s), {profile.max_num_batched_tokens} tokens/step, "
        f"step timeout {profile.execute_timeout_s} s, KV cache {profile.kv_cache_gib} GiB"
    )
