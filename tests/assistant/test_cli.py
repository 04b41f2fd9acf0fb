"""`assistant.cli` helpers that `scholia serve` runs before it serves."""

from __future__ import annotations

import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from scholia.settings import PROJECT_ROOT

# A child process: threads that each allocate, then glibc's own account of its arenas.
COUNT_ARENAS = """
import ctypes, os, sys, tempfile, threading
from assistant.cli import limit_malloc_arenas
print(limit_malloc_arenas(int(sys.argv[1])))
libc = ctypes.CDLL(None)
libc.malloc.restype = libc.fdopen.restype = ctypes.c_void_p
barrier = threading.Barrier(16)
def allocate():
    barrier.wait()  # all at once, so that each contends for an arena
    blocks = [libc.malloc(1000) for _ in range(2000)]
    barrier.wait()
threads = [threading.Thread(target=allocate) for _ in range(16)]
for thread in threads: thread.start()
for thread in threads: thread.join()
with tempfile.TemporaryFile() as out:
    stream = libc.fdopen(os.dup(out.fileno()), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    out.seek(0)
    print(out.read().decode().count("<heap nr="))
"""


def arenas_after_threads(limit: int) -> tuple[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", COUNT_ARENAS, str(limit)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    applied, heaps = result.stdout.split()
    return applied, int(heaps)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_arenas_are_capped_for_many_threads() -> None:
    applied, capped = arenas_after_threads(2)
    not_applied, uncapped = arenas_after_threads(0)
    assert (applied, not_applied) == ("True", "False")
    assert capped <= 2 < uncapped, (capped, uncapped)


def test_serve_on_an_empty_index_that_another_replica_is_filling_serves_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    import ingest.pipeline
    from assistant import cli
    from assistant.shutdown import Shutdown
    from ingest.pipeline import IngestLockedError
    from tests.ingest.helpers import make_settings

    settings = make_settings(tmp_path / "data")
    settings = settings.model_copy(
        update={"llm": settings.llm.model_copy(update={"url": "http://127.0.0.1:9/v1"})}
    )

    def locked(*_: object, **__: object) -> None:
        raise IngestLockedError("Another replica is ingesting into collection 'papers'.")

    served: list[bool] = []
    monkeypatch.setattr(ingest.pipeline, "run_ingest", locked)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: served.append(True))
    with Shutdown() as shutdown, ExitStack() as stack:
        cli._serve(settings, "127.0.0.1", 0, shutdown, stack)
    assert served == [True]
    assert "Another replica is ingesting" in capsys.readouterr().out
