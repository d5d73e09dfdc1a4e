"""Batches: many items through one operation, each an ordinary job, with one status, cancel and zip.

A batch is a small Redis hash (its operation, when it was made, its items' task ids and names)
that lives as long as its most recently active item. Its items are jobs like any other, sent at a
lower priority than single jobs (``tasks.store.BATCH_PRIORITY``), so a single job never waits
behind a batch for more than the item each worker process is running.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Mapping
from typing import IO, Any, cast

from celery import Celery

from jobs.archive import result_names, write_zip
from jobs.chains import enqueue_first, place, plan, write_plan
from jobs.deliveries import BATCH, watch
from jobs.errors import BatchNotFound, JobNotFound, redis_reachable
from jobs.follow import Tracker, canonical_id
from jobs.owners import Owners
from jobs.status import (
    BatchItemStatus,
    BatchStatus,
    QueueView,
    describe,
    describe_queued,
    is_queued,
    summarise_batch,
    webhook_report,
)
from jobs.webhooks import check_webhook, split_webhook, with_webhook_errors
from pipelines.batch_validation import validate_batch
from pipelines.chain_validation import validate_batch_then
from settings import Settings
from tasks.messages import TaskMessages
from tasks.states import JobState
from tasks.store import (
    WORKER_STALE_AFTER,
    JobStore,
    batch_key,
    job_key,
    output_key,
    queued_key,
    workers_key,
)

EXPIRED = "Expired: its result outlived ATELIER_RESULT_TTL"


class BatchSubmitter:
    """Validate a batch whole, then store every item and send its message."""

    def __init__(self, settings: Settings, celery: Celery, store: JobStore, owners: Owners) -> None:
        self.settings, self.celery, self.store, self.owners = settings, celery, store, owners
        self.messages = TaskMessages(celery)

    def submit(self, fields: Mapping[str, Any], items: Any, owner: str | None = None) -> dict[str, Any]:
        """``{"batch_id", "task_ids", "status", "total"}``; ``InvalidSubmission`` (nothing stored) for bad
        input, :class:`jobs.owners.TooManyActive` when the items take ``owner`` past its cap."""
        fields, asked = split_webhook(fields)
        webhook, webhook_errors = check_webhook(asked, self.settings)
        fields = dict(fields)
        then = fields.pop("then", None)  # each item is then a chain
        with with_webhook_errors(webhook_errors):
            operation, validated = validate_batch(
                fields, items, self.settings.max_pixels, self.settings.max_batch_items
            )
            chained = validate_batch_then(then, [item.submission for item in validated], self.settings.max_pixels)
        self.owners.admit(owner, len(validated))
        plans = [plan(item.submission, steps, self.settings) for item, steps in zip(validated, chained, strict=True)]
        with redis_reachable():
            plans = place(self.store, plans, owner, batched=True)
        batch_id = str(uuid.uuid4())
        with redis_reachable():
            pipe = self.store.redis.pipeline(transaction=True)
            for planned in plans:
                write_plan(pipe, self.store, planned, owner, batch_id)
            self.owners.record(pipe, owner, [item_id for item_id, _ in plans], [jobs[-1].job_id for _, jobs in plans])
            batch: dict[str, str | float] = {
                "task_type": operation.name,
                "created": time.time(),
                "items": json.dumps(
                    [[item_id, item.name] for (item_id, _), item in zip(plans, validated, strict=True)]
                ),
            }
            if owner is not None:
                batch["owner"] = owner
            if webhook is not None:  # the batch's, not each item's
                batch["webhook"] = json.dumps(webhook.as_record())
                watch(pipe, BATCH, batch_id, webhook, self.store.ttl)
            pipe.hset(batch_key(batch_id), mapping=cast(Any, batch))
            pipe.expire(batch_key(batch_id), self.store.ttl)
            for _, jobs in plans:  # every item's message with the batch, or none of them
                enqueue_first(pipe, self.messages, jobs[0])
            pipe.execute()
        return {
            "batch_id": batch_id,
            "task_ids": [item_id for item_id, _ in plans],
            "status": "PENDING",
            "total": len(plans),
            "task_type": operation.name,
        }


class BatchTracker:
    """Reads a batch's items in a few round trips, cancels it, packs its results."""

    def __init__(self, celery: Celery, store: JobStore) -> None:
        self.celery, self.store = celery, store
        self.tracker = Tracker(celery, store)  # for items that are chains

    def _meta_key(self, task_id: str) -> Any:
        return self.celery.backend.get_key_for_task(task_id)

    def _read(self, batch_id: str) -> tuple[str, dict[str, str], list[tuple[str, str | None]]]:
        try:
            batch_id = canonical_id(batch_id)
        except LookupError:
            raise BatchNotFound(batch_id) from None
        with redis_reachable():
            raw = cast(dict[bytes, bytes], self.store.redis.hgetall(batch_key(batch_id)))
        record = {key.decode(): value.decode() for key, value in raw.items()}
        if "items" not in record:
            raise BatchNotFound(batch_id)
        return batch_id, record, [(job_id, name) for job_id, name in json.loads(record["items"])]

    def status(self, batch_id: str) -> BatchStatus:
        """The batch's aggregate status and each item's; :class:`BatchNotFound` for unknown or expired ids."""
        batch_id, record, items = self._read(batch_id)
        statuses = self._item_statuses(items)
        return summarise_batch(batch_id, record["task_type"], statuses, "cancelled" in record, webhook_report(record))

    def _item_statuses(self, items: list[tuple[str, str | None]]) -> list[BatchItemStatus]:
        with redis_reachable():
            pipe = self.store.redis.pipeline(transaction=False)
            for job_id, _ in items:
                pipe.hgetall(job_key(job_id))
                pipe.get(self._meta_key(job_id))
            answers = pipe.execute()
            jobs = []
            for (job_id, _), raw, meta in zip(items, answers[::2], answers[1::2], strict=True):
                job = {key.decode(): value.decode() for key, value in raw.items()}
                jobs.append((job_id, job, json.loads(meta) if meta else {"status": JobState.PENDING, "result": None}))
            places = self._places(jobs)
        statuses = []
        for (job_id, name), (_, job, meta) in zip(items, jobs, strict=True):
            if "task_type" not in job:
                statuses.append(self._chain_item(job_id, name))
                continue
            status = describe_queued(job_id, job, places[job_id]) if job_id in places else describe(job_id, job, meta)
            statuses.append(
                BatchItemStatus(
                    task_id=job_id, name=name, status=status.status, progress=status.progress, message=status.message
                )
            )
        return statuses

    def _chain_item(self, chain_id: str, name: str | None) -> BatchItemStatus:
        """An item that is a chain (no job record under its id), or one whose record expired."""
        try:
            status = self.tracker.chains.status(chain_id)
        except JobNotFound:
            return BatchItemStatus(task_id=chain_id, name=name, status=JobState.FAILURE, progress=0, message=EXPIRED)
        return BatchItemStatus(
            task_id=chain_id, name=name, status=status.status, progress=status.progress, message=status.message
        )

    def _places(self, jobs: list[tuple[str, dict[str, str], dict[str, Any]]]) -> dict[str, QueueView]:
        """The queue view of each queued item: its position and its queue's live workers."""
        queued = [(job_id, job["queue"]) for job_id, job, meta in jobs if "task_type" in job and is_queued(job, meta)]
        if not queued:
            return {}
        queues = sorted({queue for _, queue in queued})
        pipe = self.store.redis.pipeline(transaction=False)
        for queue in queues:
            pipe.zcount(workers_key(queue), time.time() - WORKER_STALE_AFTER, "+inf")
        for job_id, queue in queued:
            pipe.zrank(queued_key(queue), job_id)
        answers = pipe.execute()
        workers = dict(zip(queues, answers[: len(queues)], strict=True))
        ranks = answers[len(queues) :]
        return {
            job_id: QueueView(None if rank is None else rank + 1, int(workers[queue]), None)
            for (job_id, queue), rank in zip(queued, ranks, strict=True)
        }

    def cancel(self, batch_id: str) -> BatchStatus:
        """Cancel every unfinished item (queued ones never start, running ones stop at their next step)."""
        batch_id, _, items = self._read(batch_id)
        ids = [job_id for job_id, _ in items]
        with redis_reachable():
            outcomes = {job_id: self.store.claim_outcome(job_id, JobState.REVOKED) for job_id in ids}
            claimed = [job_id for job_id, outcome in outcomes.items() if outcome is None]
            stopped = 0
            for chain_id in [job_id for job_id, outcome in outcomes.items() if outcome == "EXPIRED"]:
                with contextlib.suppress(JobNotFound):  # no job record: a chain (or an item that expired)
                    stopped += len(self.tracker.chains.cancel(chain_id))
            if claimed or stopped:  # a batch that had ended already keeps its status
                self.store.redis.hset(batch_key(batch_id), "cancelled", time.time())
            pipe = self.store.redis.pipeline(transaction=False)
            for job_id in claimed:
                pipe.hget(job_key(job_id), "queue")
            queues = pipe.execute()
            pipe = self.store.redis.pipeline(transaction=False)
            for job_id, queue in zip(claimed, queues, strict=True):
                if queue is not None:
                    pipe.zrem(queued_key(queue.decode()), job_id)
            pipe.execute()
            for job_id in claimed:
                self.celery.backend.mark_as_revoked(job_id, reason="cancelled")
            if claimed:  # one broadcast for all: a worker holding one skips it, a running one stops
                self.celery.control.revoke(claimed)
        return self.status(batch_id)

    def archive(self, batch_id: str) -> tuple[BatchStatus, IO[bytes]]:
        """A zip of the items finished so far (``<name>.png``) and ``manifest.json`` saying what became of each."""
        status = self.status(batch_id)
        files = result_names(item.name for item in status.items)
        done = [index for index, item in enumerate(status.items) if item.status == JobState.SUCCESS]
        manifest_items = [
            {
                "index": index,
                "name": item.name,
                "task_id": item.task_id,
                "status": item.status,
                "message": item.message,
                "file": files[index] if index in done else None,
            }
            for index, item in enumerate(status.items)
        ]
        manifest = {
            "batch_id": status.batch_id,
            "task_type": status.task_type,
            "status": status.status,
            "counts": status.counts,
            "items": manifest_items,
        }
        return status, write_zip(self._outputs(status, files, done), manifest)

    def _result_id(self, item_id: str) -> str:
        """The job whose output is the item's result: the item's own, or a chain's last step."""
        if self.store.redis.exists(job_key(item_id)):
            return item_id
        try:
            return self.tracker.chains.last_step(item_id)
        except JobNotFound:
            return item_id

    def _outputs(self, status: BatchStatus, files: list[str], done: list[int]) -> Any:
        """(file name, PNG) of each finished item, read a few at a time."""
        for start in range(0, len(done), 16):
            chunk = done[start : start + 16]
            with redis_reachable():
                ids = [self._result_id(status.items[index].task_id) for index in chunk]
                pngs = self.store.redis.mget([output_key(job_id) for job_id in ids])
            for index, png in zip(chunk, pngs, strict=True):
                if png is not None:
                    yield files[index], png
