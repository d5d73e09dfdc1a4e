"""Only JSON crosses Celery: a pickled message is refused and logged, never run, and the worker serves on."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from tasks.store import RECONCILER_LOCK
from tests.conftest import png_bytes
from tests.integration.conftest import Api
from tests.integration.test_jobs import SMALL, steps_job
from tests.support.operations import executions_key
from tests.support.stack import Worker, wait_until


def test_a_pickled_message_is_refused(api: Api, workers: dict[str, Worker], redis_client: Any, artifacts: Path) -> None:
    from jobs import get_client
    from tasks.celery_app import TASK_NAME

    client = get_client()
    log = artifacts / "worker-cpu.log"
    seen_before = log.stat().st_size
    job_id = str(uuid.uuid4())
    # Hold the reconciler off: a record with no message is what it sends again (as JSON) after ~20 s.
    redis_client.set(RECONCILER_LOCK, "test", ex=120)
    client.store.create(job_id, "test_steps", "cpu", {"image": png_bytes(SMALL)}, {"prompt": "pickled"})
    kwargs = {"task_type": "test_steps", "parameters": {"steps": 1, "delay": 0}, "prompt": "pickled"}
    client.celery.send_task(TASK_NAME, kwargs=kwargs, task_id=job_id, queue="cpu", serializer="pickle")

    def refused() -> bool:
        with log.open("rb") as handle:
            handle.seek(seen_before)
            return b"untrusted content of type pickle" in handle.read()

    try:
        wait_until(refused, 20, what="the refusal in the worker's log")
        assert api.wait(api.submit(steps_job(steps=1, delay=0)))["status"] == "SUCCESS"  # still serving
        assert redis_client.get(executions_key("pickled")) is None  # never ran
        assert api.status(job_id)["status"] == "PENDING"  # and nothing about it was written as a result
    finally:
        client.cancel(job_id)
        redis_client.delete(RECONCILER_LOCK)
