"""A second, separate stack (Redis database 1) with a short TTL and a short time limit, and no gpu worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jobs import JobClient
from settings import Settings
from tests.conftest import b64
from tests.integration.conftest import Api
from tests.integration.test_jobs import steps_job
from tests.support.stack import Worker, wait_until

TTL = 4  # short, yet longer than a queued job waits for the idle worker on a loaded machine
TIME_LIMIT = 8  # longer than the TTL: a job may outlive its keys' first TTL


@pytest.fixture(scope="module")
def short(redis_url: str, artifacts: Any) -> Iterator[tuple[Api, Any]]:
    import redis

    from api import create_api

    url = redis_url.rsplit("/", 1)[0] + "/1"
    env = {"REDIS_URL": url, "ATELIER_RESULT_TTL": str(TTL), "ATELIER_JOB_TIME_LIMIT": str(TIME_LIMIT)}
    settings = Settings(redis_url=url, result_ttl=TTL, job_time_limit=TIME_LIMIT)
    client = JobClient(settings)
    db = redis.Redis.from_url(url)
    db.flushdb()
    worker = Worker("cpu", "short-cpu", env=env, log=artifacts / "worker-short.log").wait_ready(db)
    try:
        with TestClient(create_api(lambda: client)) as http:
            yield Api(http), db
    finally:
        worker.stop()


def test_everything_of_a_job_expires_with_the_ttl(short: tuple[Api, Any]) -> None:
    api, db = short
    task_id = api.submit(steps_job(steps=1, delay=0))
    assert api.wait(task_id)["status"] == "SUCCESS"
    assert len(list(db.scan_iter(f"*{task_id}*"))) >= 4  # record, input, output, Celery result
    wait_until(lambda: not list(db.scan_iter(f"*{task_id}*")), TTL + 3, interval=0.2, what="the job's keys to expire")
    assert api.http.get(f"/api/v1/tasks/{task_id}/status/").status_code == 404
    assert api.http.get(f"/api/v1/tasks/{task_id}/result/").status_code == 404
    assert api.cancel(task_id).status_code == 404


def test_a_runaway_job_ends_as_failure_and_the_worker_goes_on(short: tuple[Api, Any]) -> None:
    api, _ = short
    task_id = api.submit(steps_job(steps=200, delay=0.1))
    failed = api.wait(task_id, timeout=30)
    assert failed["status"] == "FAILURE"
    assert failed["message"] == f"The job exceeded the time limit of {TIME_LIMIT} s"
    assert api.wait(api.submit(steps_job(steps=1, delay=0)))["status"] == "SUCCESS"


def test_a_gpu_job_waits_for_a_gpu_worker(short: tuple[Api, Any], photo: Any) -> None:
    """This stack has only a cpu worker: the style job stays queued, and says why."""
    api, db = short
    task_id = api.submit({"task_type": "style_transfer", "image": b64(photo), "parameters": {"style": "mosaic"}})
    time.sleep(1)  # the idle cpu worker had every chance to take it
    status = api.status(task_id)
    assert status["status"] == "PENDING" and status["queue"] == "gpu"
    assert "no gpu worker is running" in status["message"]
    assert db.llen("gpu") == 1
    assert api.cancel(task_id).json()["status"] == "REVOKED"
    db.delete("gpu")


def test_a_job_running_longer_than_the_ttl_keeps_its_keys(short: tuple[Api, Any]) -> None:
    api, _ = short
    task_id = api.submit(steps_job(steps=20, delay=0.3))  # 6 s of work, TTL 4 s: kept alive while it runs
    seen = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = api.http.get(f"/api/v1/tasks/{task_id}/status/")
        assert response.status_code == 200, response.text  # never a 404 or a 500 mid-run
        seen.add(response.json()["status"])
        if response.json()["status"] in ("SUCCESS", "FAILURE"):
            break
        time.sleep(0.1)
    assert "SUCCESS" in seen
    assert api.http.get(f"/api/v1/tasks/{task_id}/result/").status_code == 200


def test_writes_to_an_expired_job_do_not_bring_it_back(short: tuple[Api, Any]) -> None:
    from tasks.claims import JobClaims, Output
    from tasks.store import JobStore, job_key

    api, db = short
    store = JobStore(db, TTL)
    task_id = api.submit(steps_job(steps=1, delay=0))
    api.wait(task_id)
    db.delete(job_key(task_id))  # as if it had expired
    assert store.claim_outcome(task_id, "REVOKED") == "EXPIRED"
    assert not store.touch(task_id, "started", 1)
    claims = JobClaims(db, TTL)
    assert claims.start(task_id, "worker#1").state == "EXPIRED"
    assert claims.finish(task_id, "SUCCESS", "worker#1:1", Output(b"png", "test_steps", "cpu", 0.1)) == "EXPIRED"
    assert claims.publish(task_id, "celery-task-meta-" + task_id, {"status": "PROCESSING"}, touch=True) == "EXPIRED"
    assert not db.exists("celery-task-meta-" + task_id) or b"PROCESSING" not in db.get("celery-task-meta-" + task_id)
    assert not db.exists(job_key(task_id))
    for method, path in (("get", "status"), ("get", "result"), ("post", "cancel")):
        assert api.http.request(method, f"/api/v1/tasks/{task_id}/{path}/").status_code == 404
