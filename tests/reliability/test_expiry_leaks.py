"""After the TTL every key of a job is gone: 200 jobs leave Redis as they found it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from jobs import JobClient
from settings import Settings
from tests.integration.conftest import Api
from tests.integration.test_jobs import steps_job
from tests.support.stack import Worker, stable_keys, wait_until

TTL = 20  # long enough for all 200 jobs to finish before the first expires, even on a loaded machine


@pytest.fixture(scope="module")
def stack(redis_url: str, artifacts: Any) -> Iterator[tuple[Api, redis.Redis]]:
    from api import create_api

    url = redis_url.rsplit("/", 1)[0] + "/2"
    db = redis.Redis.from_url(url)
    db.flushdb()
    worker = Worker("cpu", "expiry", env={"REDIS_URL": url, "ATELIER_RESULT_TTL": str(TTL)},
                    log=artifacts / "worker-expiry.log").wait_ready(db)  # fmt: skip
    client = JobClient(Settings(redis_url=url, result_ttl=TTL))
    try:
        with TestClient(create_api(lambda: client)) as http:
            yield Api(http), db
    finally:
        worker.stop()


def job_keys(db: redis.Redis) -> set[bytes]:
    return {key for key in db.scan_iter() if key.startswith((b"atelier:job:", b"celery-task-meta-"))}


def test_two_hundred_jobs_expire_without_leaving_a_key(stack: tuple[Api, redis.Redis]) -> None:
    api, db = stack
    api.wait(api.submit(steps_job(steps=1, delay=0)))  # warm up: bindings, runtimes, heartbeats exist now
    wait_until(lambda: not job_keys(db), TTL + 5, interval=0.2, what="the warm-up job to expire")
    baseline_keys = stable_keys(db)
    # The data's memory, not the server's: client buffers and allocator slack vary with connections.
    baseline_memory = db.info("memory")["used_memory_dataset"]

    bodies = [steps_job(steps=1, delay=0) for _ in range(200)]
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(api.submit, bodies))
    succeeded: set[str] = set()  # noted as each job ends: the first may expire before the last ends

    def all_succeeded() -> bool:
        succeeded.update(
            task_id for task_id in ids if task_id not in succeeded and api.status(task_id)["status"] == "SUCCESS"
        )
        return len(succeeded) == len(ids)

    wait_until(all_succeeded, 60, interval=0.2, what="all 200 jobs to succeed")
    # Every job wrote its keys (record, input, output, result); the first may be expiring already,
    # so count those of the jobs that finished last.
    present = job_keys(db)
    for task_id in ids[-10:]:
        expected = {f"atelier:job:{task_id}", f"atelier:job:{task_id}:input:image", f"atelier:job:{task_id}:output"}
        assert {key.encode() for key in expected} <= present, task_id
        assert f"celery-task-meta-{task_id}".encode() in present

    wait_until(lambda: not job_keys(db), TTL + 10, interval=0.5, what="every job key to expire")
    time.sleep(0.5)
    assert stable_keys(db) == baseline_keys
    assert db.info("memory")["used_memory_dataset"] < baseline_memory + 512 * 1024
    assert all(api.http.get(f"/api/v1/tasks/{task_id}/status/").status_code == 404 for task_id in ids[:20])
