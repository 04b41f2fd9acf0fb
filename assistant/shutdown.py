"""An orderly stop of `scholia serve` on SIGINT, SIGTERM or SIGHUP.

The vLLM that `scholia serve` starts must die with it (3-6 GB and a busy core otherwise). Its
stop lives in `with` blocks, which only run when the stop arrives as an exception:
- while uvicorn serves, it handles SIGINT/SIGTERM itself, drains, restores the handlers it found
  and then re-raises the signal with `signal.raise_signal`; with the default handler that would
  kill the process before any `with` block ran (SIGTERM left vLLM orphaned). Our handler is the
  one restored, so the re-raised signal becomes `StopRequested`;
- SIGHUP, which uvicorn ignores, asks uvicorn to drain the same way;
- before uvicorn runs (model preparation, vLLM start-up) a signal raises `StopRequested` at once.
A signal during the stop itself is ignored, so it cannot cut the clean-up short.
"""

from __future__ import annotations

import signal
from types import FrameType, TracebackType
from typing import Protocol, Self

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequested(Exception):
    """A stop signal arrived; unwinding runs every clean-up on the way out."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class Drainable(Protocol):
    """What uvicorn.Server offers to be asked to stop."""

    should_exit: bool


class Shutdown:
    """Installs the stop handlers for the duration of a `with` block (main thread only)."""

    def __init__(self) -> None:
        self.server: Drainable | None = None
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Self:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            return  # already stopping
        self.received = signum
        if self.server is not None and not self.server.should_exit:
            self.server.should_exit = True  # uvicorn drains; serve() then returns normally
            return
        raise StopRequested(signum)
