"""The job client: one object per process that REST and the page go through."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import IO, Any, cast

from celery import Celery

from jobs.batches import BatchSubmitter, BatchTracker
from jobs.errors import BatchNotFound, JobNotFound, redis_reachable
from jobs.follow import Tracker
from jobs.history import list_history
from jobs.idempotency import IdempotencyKeys
from jobs.limits import RateLimiter, RateWindow, requester
from jobs.owners import Caller, Owners, Usage, caller_of
from jobs.status import BatchStatus, JobStatus
from jobs.submit import Submitter
from jobs.waiting import Gone, LongPoll
from settings import QUEUES, Settings, get_settings
from tasks.celery_app import make_celery
from tasks.store import JobStore, batch_key, connect


class JobClient:
    """Submit jobs and follow them, against one Redis. Thread-safe; make one per process.

    Redis being away surfaces as :class:`jobs.ServiceUnavailable`, never as a Redis exception.
    """

    def __init__(self, settings: Settings, celery: Celery | None = None) -> None:
        self.settings = settings
        self.celery = celery or make_celery(settings)
        self.store = JobStore(connect(settings.broker_url), settings.result_ttl)
        self.limits = RateLimiter(self.store, settings)
        self.owners = Owners(self.store, settings)
        self.submitter = Submitter(settings, self.celery, self.store, self.owners)
        self.tracker = Tracker(self.celery, self.store)
        self.batches = BatchSubmitter(settings, self.celery, self.store, self.owners)
        self.batch_tracker = BatchTracker(self.celery, self.store)
        self.idempotency = IdempotencyKeys(self.store)
        self.long_poll = LongPoll(
            settings.broker_url, self.tracker.status, self.celery.backend.get_key_for_task, self.tracker.published
        )

    def caller(self, user: str | None, headers: Mapping[str, str], peer: str | None) -> Caller:
        """Who a request comes from (``user``: ``access.checked_user``), as the methods below take it."""
        return caller_of(user, headers, peer, self.settings)

    def admit(self, user: str | None, headers: Mapping[str, str], peer: str | None) -> RateWindow | None:
        """Count a submission against its client's rate limit; :class:`RateLimited` when over it. The
        window after it (for ``RateLimit-*`` headers), or None without a limit."""
        return self.limits.admit(requester(user, headers, peer, self.settings))

    def submit(
        self, fields: Mapping[str, Any], files: Mapping[str, bytes] | None = None, caller: Caller | None = None
    ) -> JobStatus:
        """Validate and enqueue a job (``caller``'s); ``InvalidSubmission`` with field errors, nothing enqueued then."""
        return self.submitter.submit(fields, files, caller.owner if caller else None)

    def status(self, task_id: str, caller: Caller | None = None) -> JobStatus:
        """The job's current state; :class:`JobNotFound` for unknown or expired ids, and for another
        owner's (``caller`` None: no owner is checked)."""
        self._visible(task_id, caller)
        return self.tracker.status(task_id)

    async def watch(
        self, task_id: str, seconds: float, gone: Gone | None = None, caller: Caller | None = None
    ) -> JobStatus:
        """The job's status once it changes, or after ``seconds`` (long polling)."""
        if caller is not None and not caller.sees_all:
            await asyncio.to_thread(self._visible, task_id, caller)
        return await self.long_poll.watch(task_id, seconds, gone)

    async def ended(self, submitted: JobStatus, seconds: float, gone: Gone | None = None) -> JobStatus:
        """A single job just submitted here: its status at its end, or the latest after ``seconds``."""
        return await self.long_poll.ended(submitted, seconds, gone)

    def result(self, task_id: str, caller: Caller | None = None) -> tuple[JobStatus, dict[str, Any], bytes]:
        """(status, result metadata, PNG) of a finished job; :class:`JobConflict` if not ``SUCCESS``."""
        self._visible(task_id, caller)
        return self.tracker.result(task_id)

    def cancel(self, task_id: str, caller: Caller | None = None) -> JobStatus:
        """Cancel a queued or running job; :class:`JobConflict` when it already finished."""
        self._visible(task_id, caller)
        return self.tracker.cancel(task_id)

    def submit_batch(self, fields: Mapping[str, Any], items: Any, caller: Caller | None = None) -> dict[str, Any]:
        """Validate a batch whole and enqueue its items; ``InvalidSubmission`` (nothing enqueued) for bad input."""
        return self.batches.submit(fields, items, caller.owner if caller else None)

    def batch_status(self, batch_id: str, caller: Caller | None = None) -> BatchStatus:
        """The batch's aggregate status and its items'; :class:`jobs.BatchNotFound` for unknown or expired ids."""
        self._visible_batch(batch_id, caller)
        return self.batch_tracker.status(batch_id)

    def cancel_batch(self, batch_id: str, caller: Caller | None = None) -> BatchStatus:
        """Cancel every unfinished item of the batch."""
        self._visible_batch(batch_id, caller)
        return self.batch_tracker.cancel(batch_id)

    def batch_archive(self, batch_id: str, caller: Caller | None = None) -> tuple[BatchStatus, IO[bytes]]:
        """A zip of the batch's finished results and its manifest (a file to read, then close)."""
        self._visible_batch(batch_id, caller)
        return self.batch_tracker.archive(batch_id)

    def history(
        self, caller: Caller, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The caller's jobs, chains and batch items within the TTL, newest first (everyone's for an
        admin or without access control), and the next page's cursor; ``ValueError`` for a bad cursor."""
        return list_history(self, caller, limit, cursor)

    def usage(self, caller: Caller) -> Usage:
        """The caller's running and waiting jobs and their rate-limit window (None without a limit),
        without counting anything: what the page's header shows them."""
        with redis_reachable():
            running, waiting = self.owners.running_and_waiting(caller.owner)
        return Usage(running, waiting, self.limits.peek(caller.owner))

    def _visible(self, task_id: str, caller: Caller | None) -> None:
        if caller is None or caller.sees_all:
            return
        with redis_reachable():
            owner = self.owners.owner_of(task_id.lower())
        if owner != caller.owner:
            raise JobNotFound(task_id)  # as an id never issued: another's job is none of this caller's business

    def _visible_batch(self, batch_id: str, caller: Caller | None) -> None:
        if caller is None or caller.sees_all:
            return
        with redis_reachable():
            owner = cast(bytes | None, self.store.redis.hget(batch_key(batch_id.lower()), "owner"))
        if owner is None or owner.decode() != caller.owner:
            raise BatchNotFound(batch_id)

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
