"""A running job's progress, published by a thread of the pool process beside the job.

An engine calls ``progress(fraction, message)`` as often as it likes; the call only notes the
latest state and raises if the job was cancelled (or the worker is stopping). The publisher thread
writes the latest state to Redis (one script that also reads the job's outcome, so it learns of a
cancel) once the job has run for ``QUIET`` seconds, then every ``EVERY`` seconds while it runs. So a
job that ends within ``QUIET`` costs no progress write at all (its end is its only update, and a
client long-polling its status is woken once), and a slow job's engine never waits for Redis.
A cancel is seen within ``EVERY`` seconds; the job stops at its next step after that.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from pipelines.base import JobCancelled
from pipelines.images import preview_png
from tasks.claims import JobClaims
from tasks.shutdown import handing_back
from tasks.states import JobState

log = logging.getLogger(__name__)
QUIET = 0.05  # seconds a job runs before its progress is first published
EVERY = 0.1  # seconds between two publishes (and two looks for a cancel) of a running job


class JobHandedBack(JobCancelled):
    """Raised by the progress callback once the worker is stopping: the job goes back to its queue.
    A ``JobCancelled``, so that engines let it through as they let a cancel through."""


@dataclass
class RunningJob:
    """One job the publisher watches: its latest progress and what the publisher learnt."""

    job_id: str
    meta_key: str
    claims: JobClaims
    touch_every: float
    due: float = field(default_factory=lambda: time.monotonic() + QUIET)
    latest: tuple[int, str, Image.Image | None] | None = None
    version: int = 0
    published: int = 0
    cancelled: bool = False
    closed: bool = False
    touched: float = field(default_factory=time.monotonic)
    flushing: threading.Lock = field(default_factory=threading.Lock)


class Publisher:
    """The pool process's publisher thread (started on its first job) and the jobs it watches."""

    def __init__(self) -> None:
        self._jobs: dict[str, RunningJob] = {}
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, job: RunningJob) -> None:
        with self._wake:
            self._jobs[job.job_id] = job
            if self._thread is None or not self._thread.is_alive():  # a forked child has no thread yet
                self._thread = threading.Thread(target=self._run, name="atelier-progress", daemon=True)
                self._thread.start()
            self._wake.notify()

    def forget(self, job: RunningJob) -> None:
        """Stop publishing for ``job``; returns once no publish of it is under way, so nothing is
        written for it after this (its end, or its hand-back, is the last word)."""
        with self._wake:
            self._jobs.pop(job.job_id, None)
        with job.flushing:
            job.closed = True

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._jobs:
                    self._wake.wait()
                job = min(self._jobs.values(), key=lambda running: running.due)
                wait = job.due - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                job.due = time.monotonic() + EVERY
            self._flush(job)

    @staticmethod
    def _flush(job: RunningJob) -> None:
        with job.flushing:
            if job.closed:
                return
            version, latest = job.version, job.latest
            state: dict[str, Any] | None = None
            if latest is not None and version != job.published:
                percent, message, preview = latest
                info: dict[str, Any] = {"progress": percent, "message": message, "updated_at": time.time()}
                if preview is not None:
                    info["preview"] = preview_png(preview)
                state = {
                    "status": JobState.PROCESSING,
                    "result": info,
                    "traceback": None,
                    "children": [],
                    "date_done": None,
                    "task_id": job.job_id,
                }  # fmt: skip  (Celery's own shape)
            touch = time.monotonic() - job.touched > job.touch_every  # a running job's keys must not expire
            try:
                outcome = job.claims.publish(job.job_id, job.meta_key, state, touch)
            except Exception as exc:  # Redis restarting: the work goes on; its result waits for Redis
                log.warning("Job %s: progress not published (%s)", job.job_id, exc)
                return
            job.published = version
            if touch:
                job.touched = time.monotonic()
            job.cancelled = outcome == JobState.REVOKED


publisher = Publisher()


class ProgressReporter:
    """The pipeline's ``progress(fraction, message)``: notes the state for the publisher, raises on cancel."""

    def __init__(self, job: RunningJob) -> None:
        self.job = job
        self.percent = 0

    def __call__(self, fraction: float, message: str, preview: Image.Image | None = None) -> None:
        if handing_back.is_set():
            raise JobHandedBack(self.job.job_id)
        if self.job.cancelled:
            raise JobCancelled(self.job.job_id)
        # Progress never goes backwards, whatever an engine reports.
        # 100 comes only with SUCCESS: an engine's "done" step still reads 99 while the result is stored.
        self.percent = max(self.percent, min(99, round(min(max(fraction, 0.0), 1.0) * 100)))
        self.job.latest = (self.percent, message, preview)
        self.job.version += 1
