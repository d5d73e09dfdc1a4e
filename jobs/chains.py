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
from dataclasses import dataclass, replace
from typing import Any, cast

from jobs.errors import JobNotFound, redis_reachable
from jobs.status import ChainStepStatus, JobStatus, summarise_chain, webhook_report
from pipelines.chain_validation import ChainStep, validate_then
from pipelines.validation import InvalidSubmission, Submission, validate_submission
from settings import Settings
from tasks.celery_app import queue_for
from tasks.messages import TaskMessages
from tasks.states import JobState
from tasks.store import CHAINS, ChainLink, JobMeta, JobStore, chain_key, level_for


@dataclass(frozen=True)
class PlannedStep:
    """A job about to be stored: alone (``link`` None) or as a step of a chain, at ``level`` in its queue."""

    job_id: str
    queue: str
    submission: Submission
    link: ChainLink | None = None
    level: int = 0


Plan = tuple[str, list[PlannedStep]]  # (the task id a client gets, the jobs behind it: one, or a chain's steps)


def plan_job(submission: Submission, settings: Settings) -> PlannedStep:
    """A job that is no chain, as a one-step plan."""
    queue = queue_for(submission.operation.name, settings, submission.parameters)
    return PlannedStep(str(uuid.uuid4()), queue, submission)


def plan(first: Submission, steps: Sequence[ChainStep], settings: Settings) -> Plan:
    """A job, or a chain when there are ``steps``: a new chain id and its steps' ids, queues and links."""
    if not steps:
        job = plan_job(first, settings)
        return job.job_id, [job]
    chain_id = str(uuid.uuid4())
    total = len(steps) + 1
    submissions = [(first, None), *((step.submission, step.input) for step in steps)]
    return chain_id, [
        PlannedStep(
            str(uuid.uuid4()),
            queue_for(sub.operation.name, settings, sub.parameters),
            sub,
            ChainLink(chain_id, index, awaits, total),
        )
        for index, (sub, awaits) in enumerate(submissions, start=1)
    ]


def place(store: JobStore, plans: list[Plan], owner: str | None, batched: bool) -> list[Plan]:
    """The plans with their levels: the n-th new job of an owner in a queue where it already has k
    waiting goes to level k + n of its lane (single jobs or batch items), so owners take turns. A
    chain's later steps go at the top of their lane: they carry on work already started."""
    ahead: dict[str, int] = {}
    placed = []
    for item_id, steps in plans:
        first = steps[0]
        if first.queue not in ahead:
            ahead[first.queue] = store.waiting_of(owner, first.queue, batched) if owner else 0
        level = level_for(ahead[first.queue], batched)
        ahead[first.queue] += 1
        top = level_for(0, batched)
        placed.append(
            (item_id, [replace(step, level=level if index == 0 else top) for index, step in enumerate(steps)])
        )
    return placed


def write_plan(pipe: Any, store: JobStore, planned: Plan, owner: str | None, batch_id: str | None) -> None:
    """Add to ``pipe`` the writes that create the plan's jobs (a chain: only its first step queued, and
    the chain's record)."""
    item_id, steps = planned
    for step in steps:
        sub = step.submission
        record = {"prompt": sub.prompt, "sizes": sub.sizes, "parameters": sub.parameters}
        meta = JobMeta(owner=owner, level=step.level, batch_id=batch_id, link=step.link)
        store.add_job(pipe, step.job_id, sub.operation.name, step.queue, sub.image_bytes, record, meta)
    if steps[0].link is None:
        return
    now = time.time()
    chain: dict[str, Any] = {"ids": json.dumps([step.job_id for step in steps]), "created": now}
    chain |= {key: value for key, value in (("batch", batch_id), ("owner", owner)) if value is not None}
    pipe.hset(chain_key(item_id), mapping=chain)
    pipe.expire(chain_key(item_id), store.ttl)
    pipe.zadd(CHAINS, {item_id: now})


def enqueue_first(pipe: Any, messages: TaskMessages, step: PlannedStep) -> None:
    """Queue the message of a plan's first job, at its level, in ``pipe`` (the transaction storing it)."""
    sub = step.submission
    kwargs = {"task_type": sub.operation.name, "parameters": sub.parameters, "prompt": sub.prompt}
    messages.write(pipe, step.job_id, kwargs, step.queue, step.level or None)


def submitted(planned: Plan) -> JobStatus:
    """A new job's (or chain's) status, as its submit answers it."""
    item_id, steps = planned
    first = steps[0]
    task_type = first.submission.operation.name
    status = JobStatus(
        task_id=item_id,
        status=JobState.PENDING,
        progress=0,
        message=f"{task_type} task submitted successfully",
        result_available=False,
        task_type=task_type,
        queue=first.queue,
    )
    if first.link is None:
        return status
    names = " → ".join(step.submission.operation.name for step in steps)
    summary = [
        ChainStepStatus(task_id=step.job_id, task_type=step.submission.operation.name, status=JobState.PENDING)
        for step in steps
    ]
    return status.model_copy(update={"message": f"{names} chain submitted successfully", "step": 1, "steps": summary})


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
        cancelled = []
        with redis_reachable():
            for step_id in ids:
                record = self.store.record(step_id)
                if record is not None and not record.get("outcome") and self.cancel_step(step_id, record):
                    cancelled.append(step_id)
            if cancelled:  # a chain that had ended already keeps its status
                self.store.redis.hset(chain_key(chain_id), "cancelled", time.time())
        return cancelled
