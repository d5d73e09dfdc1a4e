"""Submitting a job (or a chain): validate, store its images and record, send its message."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from celery import Celery

from jobs.chains import Plan, place, plan, send_first, submitted, validated, write_plan
from jobs.deliveries import CHAIN, JOB, watch
from jobs.errors import ServiceUnavailable, redis_reachable
from jobs.owners import Owners
from jobs.status import JobStatus
from jobs.webhooks import check_webhook, split_webhook, with_webhook_errors
from settings import Settings
from tasks.store import JobStore, chain_key, job_key


class Submitter:
    def __init__(self, settings: Settings, celery: Celery, store: JobStore, owners: Owners) -> None:
        self.settings, self.celery, self.store, self.owners = settings, celery, store, owners

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
            pipe.execute()
        self._send(planned)
        return submitted(planned)

    def _send(self, planned: Plan) -> None:
        try:
            send_first(self.celery, planned[1][0])
        except Exception as exc:
            with redis_reachable():
                for step in planned[1]:
                    self.store.delete(step.job_id, step.queue)
                self.store.redis.delete(chain_key(planned[0]))
            raise ServiceUnavailable(f"Could not enqueue the job: the broker is unreachable ({exc})") from exc
