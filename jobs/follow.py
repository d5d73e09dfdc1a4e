"""Following a job: its status, its result, its cancel."""

from __future__ import annotations

import json
import uuid
from typing import Any

from celery import Celery

from jobs.chains import ChainTracker
from jobs.errors import AlreadyFinished, JobConflict, JobNotFound, redis_reachable
from jobs.status import JobStatus, QueueView, describe, describe_queued, describe_waiting, is_queued
from tasks.states import JobState
from tasks.store import JobStore

FINAL_OR_PROCESSING = (JobState.PROCESSING, JobState.SUCCESS, JobState.FAILURE, JobState.REVOKED)


def canonical_id(task_id: str) -> str:
    """The id as we write it (lower-case UUID); :class:`JobNotFound` for anything else."""
    try:
        canonical = str(uuid.UUID(task_id))
    except (ValueError, TypeError, AttributeError):
        raise JobNotFound(task_id) from None
    if canonical != task_id.lower():  # braces, "urn:uuid:", no hyphens: not an id we gave out
        raise JobNotFound(task_id)
    return canonical


class Tracker:
    """Reads what the workers wrote about a job, and cancels it."""

    def __init__(self, celery: Celery, store: JobStore) -> None:
        self.celery, self.store = celery, store
        self.chains = ChainTracker(store, self._step_status, self._revoke)

    def _meta_key(self, task_id: str) -> Any:
        return self.celery.backend.get_key_for_task(task_id)

    def _read(self, task_id: str) -> tuple[str, dict[str, str], dict[str, Any]]:
        """(canonical id, job record, Celery state), in one round trip; :class:`JobNotFound` if gone."""
        task_id = canonical_id(task_id)
        with redis_reachable():
            record, raw_meta = self.store.snapshot(task_id, self._meta_key(task_id))
        if record is None:
            raise JobNotFound(task_id)
        return task_id, record, json.loads(raw_meta) if raw_meta else {"status": JobState.PENDING, "result": None}

    def status(self, task_id: str) -> JobStatus:
        """The job's (or chain's) current state; raises :class:`JobNotFound` for unknown or expired ids."""
        try:
            return self._status_of(*self._read(task_id))
        except JobNotFound:
            return self.chains.status(canonical_id(task_id))

    def published(self, status: JobStatus, raw_meta: bytes) -> JobStatus | None:
        """The status a job's newly published Celery state gives (the message long polling hears),
        without reading Redis again; None where the message alone cannot tell (a chain, a batch
        item's or anything unusual): then the caller reads the status."""
        if status.step is not None or status.webhook is not None:  # a webhook's report changes unpublished
            return None
        try:
            meta = json.loads(raw_meta)
        except ValueError:
            return None
        if not isinstance(meta, dict) or meta.get("status") not in FINAL_OR_PROCESSING:
            return None
        # Published only while the job had no outcome (progress), or once its outcome was claimed (its
        # end): of the record, a status shows only its type and queue, known from the status before.
        return describe(status.task_id, {"task_type": status.task_type, "queue": status.queue}, meta)

    def _step_status(self, task_id: str) -> JobStatus:
        return self._status_of(*self._read(task_id))

    def _status_of(self, task_id: str, record: dict[str, str], meta: dict[str, Any]) -> JobStatus:
        if "waiting" in record and "outcome" not in record:
            return describe_waiting(task_id, record)
        if not is_queued(record, meta):
            return describe(task_id, record, meta)
        queue, task_type = record["queue"], record["task_type"]
        with redis_reachable():
            position, workers, runtime = self.store.queue_view(task_id, queue, task_type)
            estimate = position is not None and workers and runtime is not None  # a started job needs none
            running = self.store.running_on(queue, self._meta_key) if estimate else []
        return describe_queued(task_id, record, QueueView(position, workers, runtime, running))

    def result(self, task_id: str) -> tuple[JobStatus, dict[str, Any], bytes]:
        """The finished job's result metadata and PNG (a chain's: its last step's); :class:`JobConflict`
        if not ``SUCCESS``."""
        try:
            task_id, record, meta = self._read(task_id)
        except JobNotFound:
            status = self.chains.status(canonical_id(task_id))
            if status.status != JobState.SUCCESS:
                raise JobConflict(f"Task is {status.status}, no result", status) from None
            _, last_result, last_png = self.result(self.chains.last_step(status.task_id))
            return status, last_result, last_png
        status = self._status_of(task_id, record, meta)
        if status.status != JobState.SUCCESS:
            raise JobConflict(f"Task is {status.status}, no result", status)
        result = meta.get("result") or {}
        with redis_reachable():
            png = self.store.output_image(status.task_id)
        if png is None:
            raise JobNotFound(task_id)
        return status, result, png

    def cancel(self, task_id: str) -> JobStatus:
        """Cancel a queued or running job (a chain: its running step, and the rest never run);
        :class:`JobConflict` when it already finished."""
        try:
            task_id, record, _ = self._read(task_id)
        except JobNotFound:
            return self._cancel_chain(canonical_id(task_id))
        with redis_reachable():
            if not self._revoke(task_id, record):
                previous = self.store.claim_outcome(task_id, JobState.REVOKED)
                if previous == "EXPIRED":
                    raise JobNotFound(task_id)
                if previous != JobState.REVOKED:
                    raise AlreadyFinished("Task already finished", self.status(task_id))
        return self.status(task_id)

    def _revoke(self, task_id: str, record: dict[str, str]) -> bool:
        """Cancel the job if it has no outcome yet; whether this call did."""
        if self.store.claim_outcome(task_id, JobState.REVOKED) is not None:
            return False
        self.store.dequeue(task_id, record["queue"])
        self.celery.backend.mark_as_revoked(task_id, reason="cancelled")
        # A worker that already holds the message skips it; a running job stops at its next step.
        self.celery.control.revoke(task_id)
        return True

    def _cancel_chain(self, chain_id: str) -> JobStatus:
        status = self.chains.status(chain_id)
        if status.finished and status.status != JobState.REVOKED:
            raise AlreadyFinished("Task already finished", status)
        with redis_reachable():
            self.chains.cancel(chain_id)
        return self.chains.status(chain_id)
