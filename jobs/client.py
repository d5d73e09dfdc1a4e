"""The job client: one object per process that REST and the page go through."""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import lru_cache
from typing import IO, Any

from celery import Celery

from jobs.batches import BatchSubmitter, BatchTracker
from jobs.errors import redis_reachable
from jobs.follow import Tracker
from jobs.idempotency import IdempotencyKeys
from jobs.limits import RateLimiter, requester
from jobs.status import BatchStatus, JobStatus
from jobs.submit import Submitter
from jobs.waiting import Gone, LongPoll
from settings import QUEUES, Settings, get_settings
from tasks.celery_app import make_celery
from tasks.store import JobStore, connect


class JobClient:
    """Submit jobs and follow them, against one Redis. Thread-safe; make one per process.

    Redis being away surfaces as :class:`jobs.ServiceUnavailable`, never as a Redis exception.
    """

    def __init__(self, settings: Settings, celery: Celery | None = None) -> None:
        self.settings = settings
        self.celery = celery or make_celery(settings)
        self.store = JobStore(connect(settings.broker_url), settings.result_ttl)
        self.limits = RateLimiter(self.store, settings)
        self.submitter = Submitter(settings, self.celery, self.store)
        self.tracker = Tracker(self.celery, self.store)
        self.batches = BatchSubmitter(settings, self.celery, self.store)
        self.batch_tracker = BatchTracker(self.celery, self.store)
        self.idempotency = IdempotencyKeys(self.store)
        self.long_poll = LongPoll(settings.broker_url, self.tracker.status, self.celery.backend.get_key_for_task)

    def admit(self, user: str | None, headers: Mapping[str, str], peer: str | None) -> None:
        """Count a submission against its client's rate limit; :class:`RateLimited` when over it.
        ``user`` is the caller the auth middleware checked (``access.checked_user``), if any."""
        self.limits.admit(requester(user, headers, peer, self.settings))

    def submit(self, fields: Mapping[str, Any], files: Mapping[str, bytes] | None = None) -> JobStatus:
        """Validate and enqueue a job; ``InvalidSubmission`` with field errors, nothing enqueued then."""
        return self.submitter.submit(fields, files)

    def status(self, task_id: str) -> JobStatus:
        """The job's current state; :class:`JobNotFound` for unknown or expired ids."""
        return self.tracker.status(task_id)

    async def watch(self, task_id: str, seconds: float, gone: Gone | None = None) -> JobStatus:
        """The job's status once it changes, or after ``seconds`` (long polling)."""
        return await self.long_poll.watch(task_id, seconds, gone)

    def result(self, task_id: str) -> tuple[JobStatus, dict[str, Any], bytes]:
        """(status, result metadata, PNG) of a finished job; :class:`JobConflict` if not ``SUCCESS``."""
        return self.tracker.result(task_id)

    def cancel(self, task_id: str) -> JobStatus:
        """Cancel a queued or running job; :class:`JobConflict` when it already finished."""
        return self.tracker.cancel(task_id)

    def submit_batch(self, fields: Mapping[str, Any], items: Any) -> dict[str, Any]:
        """Validate a batch whole and enqueue its items; ``InvalidSubmission`` (nothing enqueued) for bad input."""
        return self.batches.submit(fields, items)

    def batch_status(self, batch_id: str) -> BatchStatus:
        """The batch's aggregate status and its items'; :class:`jobs.BatchNotFound` for unknown or expired ids."""
        return self.batch_tracker.status(batch_id)

    def cancel_batch(self, batch_id: str) -> BatchStatus:
        """Cancel every unfinished item of the batch."""
        return self.batch_tracker.cancel(batch_id)

    def batch_archive(self, batch_id: str) -> tuple[BatchStatus, IO[bytes]]:
        """A zip of the batch's finished results and its manifest (a file to read, then close)."""
        return self.batch_tracker.archive(batch_id)

    def health(self) -> dict[str, Any]:
        """Redis reachability, live workers and waiting jobs per queue."""
        started = time.perf_counter()
        with redis_reachable():
            self.store.redis.ping()
            workers = self.store.workers.live(QUEUES)
            waiting = self.store.queue_lengths(QUEUES)
        return {
            "status": "ok",
            "redis": {"reachable": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)},
            "queues": {queue: {"workers": workers[queue], "waiting": waiting[queue]} for queue in QUEUES},
        }


@lru_cache(maxsize=1)
def get_client() -> JobClient:
    """The process-wide job client for the global settings (sharing ``tasks.app``)."""
    from tasks import get_app

    return JobClient(get_settings(), get_app())
