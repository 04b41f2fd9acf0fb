"""`assistant.cli` helpers that `scholia serve` runs before it serves."""

from __future__ import annotations

import subprocess
import sys

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
