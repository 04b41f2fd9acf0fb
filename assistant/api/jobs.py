"""Background ingests of uploaded papers: one at a time (the ingest lock), progress on record.

The lock is taken before the upload is answered (a second upload, a removal or a
`scholia ingest` gets 409) and released by the job's thread when it ends. Each job's state is
kept as JSON beside its upload, so `GET /papers/jobs/{id}` answers after a restart too; a job
found "running" that no thread of this process runs was interrupted (the process died), and
uploading the same file again resumes it: papers already written whole are left as they are.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Literal

from assistant.schemas import IngestJob, RejectedRecord
from ingest.embed import Embedder
from ingest.ledger import now_iso
from ingest.parse import Rejected
from ingest.pipeline import IngestReport, run_ingest, scan_sources, writer_lock
from scholia.settings import Settings

log = logging.getLogger("scholia.jobs")

UploadFormat = Literal["jsonl", "pages"]
JOB_ID = re.compile(r"^[0-9a-f]{16}$")


class NoPapersError(ValueError):
    """The upload holds no valid paper record."""

    def __init__(self, rejected: list[RejectedRecord]) -> None:
        super().__init__(f"No valid paper in the upload ({len(rejected)} records rejected).")
        self.rejected = rejected


def rejected_records(rejected: list[Rejected]) -> list[RejectedRecord]:
    return [RejectedRecord(line=item.line, reason=item.reason) for item in rejected]


class IngestJobs:
    def __init__(
        self, settings: Settings, embedder: Embedder, on_change: Callable[[], None]
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.on_change = on_change
        self.folder = settings.uploads_dir
        self._running: dict[str, IngestJob] = {}
        self._guard = threading.Lock()

    def start(self, body: bytes, kind: UploadFormat, name: str) -> IngestJob:
        """Take the ingest lock, check the upload, and ingest it in a thread. Raises
        IngestLockedError (another ingest or removal runs) or NoPapersError."""
        stack = ExitStack()
        stack.enter_context(writer_lock(self.settings))
        try:
            job_id = uuid.uuid4().hex[:16]
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{job_id}.{'jsonl' if kind == 'jsonl' else 'txt'}"
            path.write_bytes(body)
            report = IngestReport()
            try:
                records = scan_sources([path], report)
                if not records:
                    raise NoPapersError(rejected_records(report.rejected))
            except BaseException:
                path.unlink()
                raise
            job = IngestJob(
                id=job_id,
                state="running",
                file=name,
                papers=len(records),
                rejected=rejected_records(report.rejected),
                started_at=now_iso(),
            )
            with self._guard:
                self._running[job_id] = job
            self._save(job)
            threading.Thread(
                target=self._run, args=(job, path, stack), name=f"ingest-{job_id}", daemon=True
            ).start()
        except BaseException:
            stack.close()
            raise
        return job

    def _run(self, job: IngestJob, path: Path, lock: ExitStack) -> None:
        def progress(written: int, to_write: int) -> None:
            self._update(job, written=written, to_write=to_write)

        try:
            report = run_ingest(
                self.settings,
                [path],
                embedder=self.embedder,
                log=log.info,
                progress=False,
                on_progress=progress,
                locked=True,
            )
        except Exception as error:
            log.exception("ingest job %s failed", job.id)
            self._update(job, state="failed", error=f"{type(error).__name__}: {error}")
        else:
            self._update(
                job,
                state="done",
                added=report.added,
                updated=report.updated,
                unchanged=report.unchanged,
                rejected=rejected_records(report.rejected),
            )
            path.unlink(missing_ok=True)
        finally:
            lock.close()
            self._update(job, finished_at=now_iso())
            with self._guard:
                self._running.pop(job.id, None)
            self.on_change()

    def _update(self, job: IngestJob, **changes: object) -> None:
        with self._guard:
            for key, value in changes.items():
                setattr(job, key, value)
            self._save(job)

    def _save(self, job: IngestJob) -> None:
        target = self.folder / f"{job.id}.json"
        staging = target.with_suffix(".json.tmp")
        staging.write_text(job.model_dump_json(), encoding="utf-8")
        os.replace(staging, target)

    def get(self, job_id: str) -> IngestJob | None:
        if not JOB_ID.match(job_id):
            return None
        with self._guard:
            running = self._running.get(job_id)
            if running is not None:
                return running.model_copy(deep=True)
        path = self.folder / f"{job_id}.json"
        if not path.is_file():
            return None
        job = IngestJob.model_validate_json(path.read_text(encoding="utf-8"))
        if job.state == "running":  # no thread of this process runs it: the process died
            job.state = "interrupted"
            job.error = (
                "The server stopped during this ingest. Upload the same file again to finish "
                "it: papers already written are kept and skipped."
            )
        return job

    def current(self) -> IngestJob | None:
        """The job running now, if any."""
        with self._guard:
            job = next(iter(self._running.values()), None)
            return job.model_copy(deep=True) if job is not None else None
