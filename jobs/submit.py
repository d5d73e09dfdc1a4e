"""Submitting a job (or a chain): validate, then store its images, its record and its message in one transaction."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from celery import Celery

from jobs.chains import enqueue_first, place, plan, submitted, validated, write_plan
from jobs.deliveries import CHAIN, JOB, watch
from jobs.errors import redis_reachable
from jobs.owners import Owners
from jobs.status import JobStatus, WebhookReport
from jobs.webhooks import check_webhook, split_webhook, with_webhook_errors
from settings import Settings
from tasks.messages import TaskMessages
from tasks.store import JobStore, chain_key, job_key


class Submitter:
    def __init__(self, settings: Settings, celery: Celery, store: JobStore, owners: Owners) -> None:
        self.settings, self.celery, self.store, self.owners = settings, celery, store, owners
        self.messages = TaskMessages(celery)

    def submit(
        self, fields: Mapping[str, Any], files: Mapping[str, bytes] | None = None, owner: str | None = None
    ) -> JobStatus:
        """Validate and enqueue a job (a chain, with ``then``) for ``owner``; raises ``InvalidSubmission``
        with field errors, :class:`jobs.owners.TooManyActive` over the owner's cap; enqueues nothing then."""
        fields, asked = split_webhook(fields)
        webhook, webhook_errors = check_webhook(asked, self.settings)
        with with_webhook_errors(webhook_errors):
            submission, steps = validated(fields, files or {}, self.settings.max_pixels)  # `then` too
        self.owners.admit(owner, 1)
        with redis_reachable():
            planned = place(self.store, [plan(submission, steps, self.settings)], owner, batched=False)[0]
        item_id, jobs = planned
        with redis_reachable():
            pipe = self.store.redis.pipeline(transaction=True)
            write_plan(pipe, self.store, planned, owner, None)
            self.owners.record(pipe, owner, [item_id], [jobs[-1].job_id])
            if webhook is not None:  # on the job's record, or the chain's (not each step's)
                chained = jobs[0].link is not None
                record = chain_key(item_id) if chained else job_key(item_id)
                pipe.hset(record, "webhook", json.dumps(webhook.as_record()))
                watch(pipe, CHAIN if chained else JOB, item_id, webhook, self.store.ttl)
            enqueue_first(pipe, self.messages, jobs[0])  # its message with its record, or neither
            pipe.execute()
        status = submitted(planned)
        if webhook is not None:  # its status reports the deliveries (and is read whole, not from messages)
            status = status.model_copy(update={"webhook": WebhookReport(delivered=0, failed=0)})
        return status
