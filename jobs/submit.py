"""Submitting a job: validate, store its images and record, send its message."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from celery import Celery

from jobs.chains import enqueue_chain, validated
from jobs.deliveries import JOB, watch, watch_chain
from jobs.errors import ServiceUnavailable, redis_reachable
from jobs.status import JobStatus
from jobs.webhooks import check_webhook, split_webhook, with_webhook_errors
from settings import Settings
from tasks.celery_app import TASK_NAME, queue_for
from tasks.states import JobState
from tasks.store import JobStore


class Submitter:
    def __init__(self, settings: Settings, celery: Celery, store: JobStore) -> None:
        self.settings, self.celery, self.store = settings, celery, store

    def submit(self, fields: Mapping[str, Any], files: Mapping[str, bytes] | None = None) -> JobStatus:
        """Validate and enqueue a job; raises ``InvalidSubmission`` with field errors, enqueues nothing then."""
        fields, asked = split_webhook(fields)
        webhook, webhook_errors = check_webhook(asked, self.settings)
        with with_webhook_errors(webhook_errors):
            submission, steps = validated(fields, files or {}, self.settings.max_pixels)  # `then` too
        if steps:
            status = enqueue_chain(self.settings, self.celery, self.store, submission, steps)
            if webhook is not None:  # the chain's, not each step's
                with redis_reachable():
                    watch_chain(self.store.redis, status.task_id, webhook, self.store.ttl)
            return status
        task_type = submission.operation.name
        queue = queue_for(task_type, self.settings, submission.parameters)
        job_id = str(uuid.uuid4())
        # prompt and parameters are kept so that a job whose worker died can be sent again.
        record = {"prompt": submission.prompt, "sizes": submission.sizes, "parameters": submission.parameters}
        if webhook is not None:
            record["webhook"] = webhook.as_record()
        with redis_reachable():
            pipe = self.store.redis.pipeline(transaction=True)
            self.store.add_job(pipe, job_id, task_type, queue, submission.image_bytes, record)
            if webhook is not None:
                watch(pipe, JOB, job_id, webhook, self.store.ttl)
            pipe.execute()
        try:
            self.celery.send_task(
                TASK_NAME,
                kwargs={"task_type": task_type, "parameters": submission.parameters, "prompt": submission.prompt},
                task_id=job_id,
                queue=queue,
            )
        except Exception as exc:
            with redis_reachable():
                self.store.delete(job_id, queue)
            raise ServiceUnavailable(f"Could not enqueue the job: the broker is unreachable ({exc})") from exc
        return JobStatus(
            task_id=job_id,
            status=JobState.PENDING,
            progress=0,
            message=f"{task_type} task submitted successfully",
            result_available=False,
            task_type=task_type,
            queue=queue,
        )
