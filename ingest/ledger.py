"""When each paper version was ingested: an append-only JSON Lines file beside the index.

Chroma's chunk metadata stays free of times (two runs of the same sources give identical
chunks). A line is appended only after a batch's write has returned, so a paper listed here
with the hash the store holds was written whole at that time; a torn last line is skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class IngestLedger:
    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, papers: Iterable[tuple[str, str]], at: str | None = None) -> None:
        """Append (paper id, content hash) pairs as ingested at `at` (default: now)."""
        when = at or now_iso()
        lines = "".join(
            json.dumps({"id": paper_id, "hash": content_hash, "at": when}) + "\n"
            for paper_id, content_hash in papers
        )
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as handle:
            if handle.seek(0, os.SEEK_END) > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":  # a line torn by a kill: end it, keep ours whole
                    lines = "\n" + lines
            handle.write(lines.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())

    def times(self) -> dict[str, tuple[str, str]]:
        """paper id → (content hash, ingest time) of its latest recorded write."""
        if not self.path.is_file():
            return {}
        found: dict[str, tuple[str, str]] = {}
        with self.path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                    found[str(entry["id"])] = (str(entry["hash"]), str(entry["at"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a line torn by a kill
        return found
