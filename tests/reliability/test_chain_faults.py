"""A chain under faults: a step keeps the guarantees of a single job (one retry, never run twice)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from jobs import JobClient
from settings import Settings
from tasks.store import job_key
from tests.integration.conftest import Api
from tests.integration.test_chains import steps
from tests.integration.test_worker_lost import kill_worker
from tests.support.operations import executions_key
from tests.support.stack import RedisServer, Worker, wait_until


def test_a_worker_killed_in_a_middle_step_retries_that_step_once(
    api: Api, busy_cpu: str, redis_client: Any, artifacts: Path
) -> None:
    doomed = Worker("cpu", "chain-doomed", log=artifacts / "worker-chain-doomed.log").wait_ready(redis_client)
    try:
        chain_id = api.submit(steps("chain-killed", count=3, delay=0.2, step2={"steps": 15}))  # step 2: 3 s
        wait_until(lambda: api.status(chain_id).get("step") == 2 and api.status(chain_id)["status"] == "PROCESSING",
                   60, interval=0.02, what="step 2 to run on the doomed worker")  # fmt: skip
        second = api.status(chain_id)["steps"][1]["task_id"]
        kill_worker(doomed)
        api.cancel(busy_cpu)  # the session's worker takes over
        final = api.wait(chain_id, timeout=120)
        assert final["status"] == "SUCCESS", final
        runs = [redis_client.get(executions_key(f"chain-killed-{step}")) for step in (1, 2, 3)]
        assert runs[0] == b"1" and runs[1] == b"2" and runs[2] == b"1", runs  # the lost run and its one retry
        assert redis_client.hget(job_key(second), "attempts") == b"2"
    finally:
        doomed.stop()


def test_a_chain_survives_a_redis_restart(tmp_path: Path, artifacts: Path) -> None:
    from api import create_api

    server = RedisServer(tmp_path / "redis")
    client = JobClient(Settings(redis_url=server.url))
    worker: Worker | None = None
    try:
        with TestClient(create_api(lambda: client)) as http:
            api = Api(http)
            chain_id = api.submit(steps("chain-restart", count=3, delay=0))  # no worker yet: queued
            server.stop()
            assert http.get(f"/api/v1/tasks/{chain_id}/status/").status_code == 503
            server.start()
            wait_until(lambda: http.get("/healthz").status_code == 200, 10, what="the API to recover")
            assert api.status(chain_id)["status"] == "PENDING"
            worker = Worker("cpu", "chain-restart", env={"REDIS_URL": server.url}, log=artifacts / "worker-restart.log")
            worker.wait_ready(client.store.redis)
            assert api.wait(chain_id, timeout=60)["status"] == "SUCCESS"
            for step in (1, 2, 3):
                assert client.store.redis.get(executions_key(f"chain-restart-{step}")) == b"1"
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
