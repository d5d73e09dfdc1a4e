"""Chains on the web side: one submission, several steps, one task id.

The chain's id answers on every ``/api/v1/tasks/`` route: its status says which step runs and how
far the whole chain is, its result is the last step's, a cancel stops the running step and drops
the rest. Each step is also a job of its own, with its own id (``steps`` in the status).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from celery import Celery

from jobs.errors import JobNotFound, ServiceUnavailable, redis_reachable
from jobs.status import ChainStepStatus, JobStatus, summarise_chain, webhook_report
from pipelines.chain_validation import ChainStep, validate_then
from pipelines.validation import InvalidSubmission, Submission, validate_submission
from settings import Settings
from tasks.celery_app import TASK_NAME, queue_for
from tasks.states import JobState
from tasks.store import BATCH_PRIORITY, CHAINS, ChainLink, JobStore, chain_key


@dataclass(frozen=True)
class PlannedStep:
    """A job about to be stored: alone (``link`` None) or as a step of a chain."""

    job_id: str
    queue: str
    submission: Submission
    link: ChainLink | None = None


def plan_job(submission: Submission, settings: Settings) -> PlannedStep:
    """A job that is no chain, as a one-step plan."""
    queue = queue_for(submission.operation.name, settings, submission.parameters)
    return PlannedStep(str(uuid.uuid4()), queue, submission)


def plan_chain(first: Submission, steps: Sequence[ChainStep], settings: Settings) -> tuple[str, list[PlannedStep]]:
    """A new chain id and its steps' ids, queues and links (step 1 first)."""
    chain_id = str(uuid.uuid4())
    total = len(steps) + 1
    planned = [PlannedStep(str(uuid.uuid4()), "", first, ChainLink(chain_id, 1, None, total))]
    planned += [
        PlannedStep(str(uuid.uuid4()), "", step.submission, ChainLink(chain_id, index, step.input, total))
        for index, step in enumerate(steps, start=2)
    ]
    return chain_id, [
        PlannedStep(
            step.job_id,
            queue_for(step.submission.operation.name, settings, step.submission.parameters),
            step.submission,
            step.link,
        )
        for step in planned
    ]


def write_chain(pipe: Any, store: JobStore, chain_id: str, steps: Sequence[PlannedStep], batch_id: str | None) -> None:
    """Add to ``pipe`` the writes that create the chain: every step's job (only the first queued) and
    the chain's record."""
    for step in steps:
        sub = step.submission
        record = {"prompt": sub.prompt, "sizes": sub.sizes, "parameters": sub.parameters}
        store.add_job(pipe, step.job_id, sub.operation.name, step.queue, sub.image_bytes, record, batch_id, step.link)
    now = time.time()
    chain: dict[str, Any] = {"ids": json.dumps([step.job_id for step in steps]), "created": now}
    if batch_id is not None:
        chain["batch"] = batch_id
    pipe.hset(chain_key(chain_id), mapping=chain)
    pipe.expire(chain_key(chain_id), store.ttl)
    pipe.zadd(CHAINS, {chain_id: now})


def send_first(celery: Celery, step: PlannedStep, batched: bool, producer: Any = None) -> None:
    sub = step.submission
    celery.send_task(
        TASK_NAME,
        kwargs={"task_type": sub.operation.name, "parameters": sub.parameters, "prompt": sub.prompt},
        task_id=step.job_id,
        queue=step.queue,
        priority=BATCH_PRIORITY if batched else None,
        producer=producer,
    )


def validated(
    fields: Mapping[str, Any], files: Mapping[str, bytes], max_pixels: int
) -> tuple[Submission, list[ChainStep]]:
    """A submission and its follow-up steps (``then``), validated together: one
    :class:`InvalidSubmission` with every problem of the first job and of each step."""
    fields = dict(fields)
    then = fields.pop("then", None)
    first: Submission | None = None
    details: dict[str, list[str]] = {}
    try:
        first, _ = validate_submission(fields, files, max_pixels)
    except InvalidSubmission as exc:
        details.update(exc.details)
    try:
        steps = validate_then(then, first, max_pixels)
    except InvalidSubmission as exc:
        details.update(exc.details)
    if details or first is None:
        raise InvalidSubmission(details)
    return first, steps


def enqueue_chain(
    settings: Settings, celery: Celery, store: JobStore, first: Submission, steps: list[ChainStep]
) -> JobStatus:
    """Store a chain's steps and send its first: the chain's status as submitted."""
    chain_id, planned = plan_chain(first, steps, settings)
    with redis_reachable():
        pipe = store.redis.pipeline(transaction=True)
        write_chain(pipe, store, chain_id, planned, None)
        pipe.execute()
    try:
        send_first(celery, planned[0], batched=False)
    except Exception as exc:
        with redis_reachable():
            for step in planned:
                store.delete(step.job_id, step.queue)
            store.redis.delete(chain_key(chain_id))
        raise ServiceUnavailable(f"Could not enqueue the chain: the broker is unreachable ({exc})") from exc
    names = " → ".join(step.submission.operation.name for step in planned)
    return JobStatus(
        task_id=chain_id,
        status=JobState.PENDING,
        progress=0,
        message=f"{names} chain submitted successfully",
        result_available=False,
        task_type=first.operation.name,
        queue=planned[0].queue,
        step=1,
        steps=[
            ChainStepStatus(task_id=step.job_id, task_type=step.submission.operation.name, status=JobState.PENDING)
            for step in planned
        ],
    )


class ChainTracker:
    """A chain's status, result and cancel, from its steps' (``status`` reads one step: ``step_status``)."""

    def __init__(self, store: JobStore, step_status: Any, cancel_step: Any) -> None:
        self.store, self.step_status, self.cancel_step = store, step_status, cancel_step

    def record(self, chain_id: str) -> dict[str, str]:
        """The chain's record; :class:`JobNotFound` if no such chain."""
        with redis_reachable():
            raw = cast(dict[bytes, bytes], self.store.redis.hgetall(chain_key(chain_id)))
        if b"ids" not in raw:
            raise JobNotFound(chain_id)
        return {key.decode(): value.decode() for key, value in raw.items()}

    def steps(self, chain_id: str) -> tuple[list[str], bool]:
        """(the steps' ids, whether the chain was cancelled); :class:`JobNotFound` if no such chain."""
        record = self.record(chain_id)
        return json.loads(record["ids"]), "cancelled" in record

    def status(self, chain_id: str) -> JobStatus:
        record = self.record(chain_id)
        statuses = []
        for step_id in json.loads(record["ids"]):
            try:
                statuses.append(self.step_status(step_id))
            except JobNotFound:  # a step outlived by its chain (its TTL ran out first)
                raise JobNotFound(chain_id) from None
        status = summarise_chain(chain_id, statuses, "cancelled" in record)
        return status.model_copy(update={"webhook": webhook_report(record)})  # the chain's webhook, not a step's

    def last_step(self, chain_id: str) -> str:
        return self.steps(chain_id)[0][-1]

    def cancel(self, chain_id: str) -> list[str]:
        """Cancel every unfinished step; the ids of those this call cancelled."""
        ids, _ = self.steps(chain_id)
        with redis_reachable():
            self.store.redis.hset(chain_key(chain_id), "cancelled", time.time())
        cancelled = []
        for step_id in ids:
            record = self.store.record(step_id)
            if record is None or record.get("outcome"):
                continue
            if self.cancel_step(step_id, record):
                cancelled.append(step_id)
        return cancelled
