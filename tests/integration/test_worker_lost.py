"""A job survives the death of its worker: sent again once, then FAILURE "worker lost"."""

from __future__ import annotations

import signal
from typing import Any

import psutil

from tests.integration.conftest import Api
from tests.integration.test_jobs import steps_job
from tests.support.operations import executions_key
from tests.support.stack import Worker, wait_until


def kill_worker(worker: Worker) -> None:
    main = psutil.Process(worker.process.pid)
    for process in [*main.children(recursive=True), main]:
        process.send_signal(signal.SIGKILL)
    worker.process.wait(10)


def test_a_job_whose_whole_worker_is_killed_finishes_elsewhere(
    api: Api, busy_cpu: str, redis_client: Any, artifacts: Any
) -> None:
    doomed = Worker("cpu", "doomed", log=artifacts / "worker-doomed.log").wait_ready(redis_client)
    try:
        task_id = api.submit(steps_job(steps=40, delay=0.1, marker="worker-dies"))  # the session worker is busy
        owner = wait_until(lambda: redis_client.hget(f"atelier:job:{task_id}", "worker"), 20, what="the job to start")
        assert owner.decode().startswith("doomed@test#")
        kill_worker(doomed)
        retrying = api.wait(task_id, ("PENDING",), timeout=60)  # noticed within the heartbeat window
        assert "retrying after a worker was lost" in retrying["message"]
        api.cancel(busy_cpu)  # free the surviving worker
        done = api.wait(task_id, timeout=60)
        assert done["status"] == "SUCCESS"
        assert redis_client.get(executions_key("worker-dies")) == b"2"  # the lost run and the retry, no more
        assert redis_client.hget(f"atelier:job:{task_id}", "attempts") == b"2"
    finally:
        doomed.stop()


def test_a_job_is_retried_only_once(api: Api, workers: dict[str, Worker], redis_client: Any) -> None:
    """The pool process dies twice: Celery redelivers at once; the third start ends it as worker lost."""
    task_id = api.submit(steps_job(steps=200, delay=0.05, marker="dies-twice"))
    for attempt in (1, 2):
        wait_until(
            lambda attempt=attempt: redis_client.get(executions_key("dies-twice")) == str(attempt).encode(),
            30,
            what=f"attempt {attempt}",
        )
        api.wait(task_id, ("PROCESSING",))
        pool = psutil.Process(workers["cpu"].process.pid).children()
        for child in pool:
            child.send_signal(signal.SIGKILL)
    failed = api.wait(task_id, timeout=60)
    assert failed["status"] == "FAILURE"
    assert failed["message"].startswith("Worker lost")
    assert redis_client.get(executions_key("dies-twice")) == b"2"
    assert api.wait(api.submit(steps_job(steps=1, delay=0)))["status"] == "SUCCESS"  # the worker serves on


def test_a_message_fetched_by_a_worker_that_died_before_starting_is_queued_again(
    api: Api, workers: dict[str, Worker], redis_client: Any
) -> None:
    """As when the worker dies between fetching a message and starting it: the message sits only in
    kombu's unacked hash, which Celery alone would give back after the visibility timeout (an hour)."""
    import json
    import time
    import uuid

    from jobs import get_client
    from tasks.celery_app import TASK_NAME
    from tests.conftest import png_bytes
    from tests.integration.test_jobs import SMALL

    client = get_client()
    job_id = str(uuid.uuid4())
    client.store.create(job_id, "test_steps", "cpu", {"image": png_bytes(SMALL)}, {"prompt": "in-limbo"})
    kwargs = {"task_type": "test_steps", "parameters": {"steps": 1, "delay": 0}, "prompt": "in-limbo"}
    client.celery.send_task(TASK_NAME, kwargs=kwargs, task_id=job_id, queue="limbo")  # a queue nobody consumes
    message = json.loads(redis_client.rpop("limbo"))
    tag = str(uuid.uuid4())
    redis_client.hset("unacked", tag, json.dumps([message, "cpu", "cpu"]))
    redis_client.zadd("unacked_index", {tag: time.time() - 120})  # fetched two minutes ago, never started

    assert api.wait(job_id, timeout=60)["status"] == "SUCCESS"
    assert redis_client.get(executions_key("in-limbo")) == b"1"
    assert not redis_client.hexists("unacked", tag)


def test_a_cancelled_job_still_held_by_its_worker_is_not_given_back(redis_client: Any) -> None:
    """A running job cancelled mid-step is no longer running in the store, but its worker still
    holds the message until the step ends: the reconciler must not queue it again."""
    import json
    import time
    import uuid

    from jobs import get_client
    from tasks.celery_app import TASK_NAME
    from tests.conftest import png_bytes
    from tests.integration.test_jobs import SMALL

    client = get_client()
    job_id = str(uuid.uuid4())
    client.store.create(job_id, "test_steps", "cpu", {"image": png_bytes(SMALL)}, {"prompt": "cancelled-held"})
    kwargs = {"task_type": "test_steps", "parameters": {"steps": 1, "delay": 0}, "prompt": "cancelled-held"}
    client.celery.send_task(TASK_NAME, kwargs=kwargs, task_id=job_id, queue="limbo")  # a queue nobody consumes
    message = json.loads(redis_client.rpop("limbo"))
    assert client.cancel(job_id).status == "REVOKED"  # first, so the session's reconciler never sees it live
    tag = str(uuid.uuid4())
    redis_client.hset("unacked", tag, json.dumps([message, "cpu", "cpu"]))
    redis_client.zadd("unacked_index", {tag: time.time() - 120})
    try:
        assert client.store.restore_unstarted(older_than=30) == []
        assert redis_client.hexists("unacked", tag)  # left to the broker's visibility timeout
    finally:
        redis_client.hdel("unacked", tag)
        redis_client.zrem("unacked_index", tag)
