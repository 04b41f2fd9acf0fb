"""Real servers that tests start on 127.0.0.1 (a `chroma run` server, a PostgreSQL), and
waiting for them."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import pytest

from scholia.settings import PROJECT_ROOT

LOG_TAIL_CHARS = 4000


def chroma_cli() -> str:
    beside = Path(sys.executable).with_name("chroma")
    found = str(beside) if beside.is_file() else shutil.which("chroma")
    if not found:
        pytest.skip("the `chroma` command is not installed")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_http(
    url: str,
    proc: subprocess.Popen[bytes] | None,
    log: Path | None,
    timeout: float,
    interval: float = 0.5,
) -> float:
    """Poll GET `url` until it answers 200; return the seconds waited.

    Fails the test, with the tail of `log`, when `proc` exits first or `timeout` passes.
    """
    started = time.monotonic()
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"exited with code {proc.returncode} before {url} answered{_tail(log)}")
        if time.monotonic() - started > timeout:
            pytest.fail(f"{url} did not answer 200 within {timeout:.0f} s{_tail(log)}")
        time.sleep(interval)


@contextmanager
def scholia_serve(
    data_dir: Path, env: dict[str, str], log: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A `scholia serve` process with `env` over this process's environment and its data in
    `data_dir`, logging to `log`: (its URL, the process), not waited for; stopped with Ctrl-C."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "assistant.cli", "serve", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env={**os.environ, "SCHOLIA_DATA_DIR": str(data_dir), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(log: Path | None) -> str:
    if log is None or not log.is_file():
        return ""
    return f"; last lines of {log}:\n{log.read_text(errors='replace')[-LOG_TAIL_CHARS:]}"


class _Started:
    """A server a test starts on entering a `with` block and stops on leaving it."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ChromaServer(_Started):
    """A `chroma run` server that a test can stop and start again on the same port and data."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.path = folder / "server-db"
        self.home = folder / "server-home"
        self.log = folder / "chroma-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        command = [chroma_cli(), "run", "--path", str(self.path)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(self.port)],
                env={**os.environ, "HOME": str(self.home), "ANONYMIZED_TELEMETRY": "False"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_http(f"{self.url}/api/v2/heartbeat", self.process, self.log, timeout=60, interval=0.2)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[ChromaServer]:
    with ChromaServer(tmp_path) as server:
        yield server


@pytest.fixture
def chroma_url(chroma_server: ChromaServer) -> str:
    return chroma_server.url


def finished_job(
    get_json: Callable[[str], Any], job_id: str, timeout_s: float, interval_s: float
) -> dict[str, Any]:
    """Poll `/papers/jobs/{job_id}` (through `get_json`, a TestClient or a live server) until
    it stops running."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = get_json(f"/papers/jobs/{job_id}")
        if job["state"] != "running":
            return job
        time.sleep(interval_s)
    raise AssertionError(f"job {job_id} still running after {timeout_s} s")


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian's layout; `make test` installs it)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major_version)
    if not found:
        pytest.skip("PostgreSQL is not installed (`make postgres` installs it)")
    return Path(found[-1]).parent


def _major_version(initdb: str) -> int:
    return int(Path(initdb).parent.parent.name)


class PostgresServer(_Started):
    """A throw-away PostgreSQL cluster in `folder`, on a free port, trusting local connections.

    initdb refuses to run as root: under root the cluster belongs to the `postgres` user."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bin = postgres_bin()
        # Its own folder under /tmp: the `postgres` user cannot enter pytest's (mode 0700).
        self.folder = Path(tempfile.mkdtemp(prefix="scholia-postgres-"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*as_owner, *command], capture_output=True, cwd=self.folder)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            pytest.fail(
                f"{Path(command[0]).name} exited {done.returncode}: {output}{_tail(self.log)}"
            )

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-w", "-t", "60",
        )  # fmt: skip

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with PostgresServer() as server:
        yield server.url
