"""A batch under faults: its items keep the guarantees of single jobs (nothing lost, nothing run twice)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from jobs import JobClient
from settings import Settings
from tasks.store import job_key
from tests.conftest import b64
from tests.integration.conftest import Api
from tests.integration.test_batches import batch_status, submit_batch, wait_batch
from tests.integration.test_jobs import SMALL
from tests.integration.test_worker_lost import kill_worker
from tests.support.operations import executions_key
from tests.support.stack import RedisServer, Worker, wait_until


def steps_batch(marker: str, count: int, steps: int, delay: float) -> dict[str, Any]:
    return {
        "task_type": "test_steps",
        "parameters": {"steps": steps, "delay": delay},
        "items": [
            {"image": b64(SMALL), "prompt": f"{marker}-{index}", "name": f"{marker}-{index}.png"}
            for index in range(count)
        ],
    }


def test_a_worker_killed_mid_batch_loses_no_item_and_runs_none_twice(
    api: Api, busy_cpu: str, redis_client: Any, artifacts: Path
) -> None:
    doomed = Worker("cpu", "batch-doomed", log=artifacts / "worker-batch-doomed.log").wait_ready(redis_client)
    try:
        answer = submit_batch(api, steps_batch("killed-mid-batch", 12, steps=6, delay=0.05))
        batch_id = answer["batch_id"]
        wait_until(lambda: batch_status(api, batch_id)["counts"]["SUCCESS"] >= 3, 60, what="three items done")
        running = wait_until(
            lambda: [item for item in batch_status(api, batch_id)["items"] if item["status"] == "PROCESSING"],
            20,
            interval=0.01,
            what="an item running on the doomed worker",
        )
        kill_worker(doomed)
        api.cancel(busy_cpu)  # the session's worker takes over
        final = wait_batch(api, batch_id, timeout=120)
        assert final["status"] == "SUCCESS", final
        assert final["counts"]["SUCCESS"] == 12
        runs = [int(redis_client.get(executions_key(f"killed-mid-batch-{index}")) or 0) for index in range(12)]
        attempts = [int(redis_client.hget(job_key(task_id), "attempts") or 0) for task_id in answer["task_ids"]]
        # Only the item the doomed worker held when killed ran again: the one seen running, or the next
        # it took if that one ended in the meantime (items are 0.3 s). Every other item ran once.
        retried = [index for index in range(12) if (runs[index], attempts[index]) != (1, 1)]
        assert len(retried) <= 1, (running, runs, attempts)
        assert all(runs[index] <= 2 and attempts[index] == 2 for index in retried), (runs, attempts)
    finally:
        doomed.stop()


def test_a_batch_survives_a_redis_restart(tmp_path: Path, artifacts: Path) -> None:
    from api import create_api

    server = RedisServer(tmp_path / "redis")
    client = JobClient(Settings(redis_url=server.url))
    worker: Worker | None = None
    try:
        with TestClient(create_api(lambda: client)) as http:
            api = Api(http)
            answer = submit_batch(api, steps_batch("restart-batch", 6, steps=1, delay=0))  # no worker yet: all queued
            server.stop()
            assert http.get(f"/api/v1/batches/{answer['batch_id']}/").status_code == 503
            server.start()
            wait_until(lambda: http.get("/healthz").status_code == 200, 10, what="the API to recover")
            assert batch_status(api, answer["batch_id"])["counts"]["PENDING"] == 6
            worker = Worker("cpu", "batch-restart", env={"REDIS_URL": server.url}, log=artifacts / "worker-restart.log")
            worker.wait_ready(client.store.redis)
            final = wait_batch(api, answer["batch_id"], timeout=60)
            assert final["status"] == "SUCCESS" and final["counts"]["SUCCESS"] == 6
            for index in range(6):
                assert client.store.redis.get(executions_key(f"restart-batch-{index}")) == b"1"
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


def test_a_batch_item_whose_message_was_lost_is_sent_again_at_the_batch_priority(
    api: Api, workers: dict[str, Worker], redis_client: Any
) -> None:
    """The reconciler looks for batch items too (in their place in the queue order), and sends the
    lost one again behind single jobs, once."""
    import time
    import uuid

    from jobs import get_client
    from tasks.store import BATCH_PRIORITY, JobMeta, queue_score, queued_key
    from tests.conftest import png_bytes
    from tests.reliability.test_lost_in_transit import in_broker

    store = get_client().store
    job_id, batch_id = str(uuid.uuid4()), str(uuid.uuid4())
    record = {"prompt": "batch-item-lost", "parameters": {"steps": 1, "delay": 0}}
    pipe = redis_client.pipeline(transaction=True)
    meta = JobMeta(level=BATCH_PRIORITY, batch_id=batch_id)
    store.add_job(pipe, job_id, "test_steps", "cpu", {"image": png_bytes(SMALL)}, record, meta)
    pipe.execute()
    redis_client.zadd(
        queued_key("cpu"), {job_id: queue_score(time.time() - 60, BATCH_PRIORITY)}
    )  # a minute ago, no message
    assert not in_broker(redis_client, job_id)
    assert api.wait(job_id, timeout=90)["status"] == "SUCCESS"
    assert redis_client.get(executions_key("batch-item-lost")) == b"1"
    assert redis_client.hexists(job_key(job_id), "resent")
