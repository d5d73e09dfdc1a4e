"""Submitting a job: validate, store its images and record, send its message."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from celery import Celery

from jobs.errors import ServiceUnavailable, redis_reachable
from jobs.status import JobStatus
from pipelines.validation import validate_submission
from settings import Settings
from tasks.celery_app import TASK_NAME, queue_for
from tasks.states import JobState
from tasks.store import JobStore


class Submitter:
    def __init__(self, settings: Settings, celery: Celery, store: JobStore) -> None:
        self.settings, self.celery, self.store = settings, celery, store

    def submit(self, fields: Mapping[str, Any], files: Mapping[str, bytes] | None = None) -> JobStatus:
        """Validate and enqueue a job; raises ``InvalidSubmission`` with field errors, enqueues nothing then."""
        submission, _ = validate_submission(fields, files or {}, self.settings.max_pixels)
        task_type = submission.operation.name
        queue = queue_for(task_type, self.settings, submission.parameters)
        job_id = str(uuid.uuid4())
        # prompt and parameters are kept so that a job whose worker died can be sent again.
        record = {"prompt": submission.prompt, "sizes": submission.sizes, "parameters": submission.parameters}
        with redis_reachable():
            self.store.create(job_id, task_type, queue, submission.image_bytes, record)
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
