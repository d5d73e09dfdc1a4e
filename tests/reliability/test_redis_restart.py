"""Redis stopped and started again: with the append-only file, queued jobs and results survive,
the API says 503 meanwhile, and everything recovers by itself."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from jobs import JobClient
from settings import Settings
from tests.integration.conftest import Api
from tests.integration.test_jobs import steps_job
from tests.support.stack import RedisServer, Worker, wait_until


def test_queued_jobs_and_results_survive_a_redis_restart(tmp_path: Path, artifacts: Any) -> None:
    from api import create_api

    server = RedisServer(tmp_path / "redis")
    env = {"REDIS_URL": server.url}
    client = JobClient(Settings(redis_url=server.url))
    worker = Worker("cpu", "restart", env=env, log=artifacts / "worker-restart.log")
    try:
        with TestClient(create_api(lambda: client)) as http:
            api = Api(http)
            worker.wait_ready(client.store.redis)
            done = api.submit(steps_job(steps=1, delay=0))
            assert api.wait(done)["status"] == "SUCCESS"
            worker.stop()
            queued = api.submit(steps_job(steps=1, delay=0))  # no worker: it waits in the queue

            server.stop()
            assert http.get(f"/api/v1/tasks/{queued}/status/").status_code == 503
            assert http.get("/healthz").status_code == 503
            server.start()

            wait_until(lambda: http.get("/healthz").status_code == 200, 10, what="the API to recover")
            assert api.status(done)["status"] == "SUCCESS"
            assert http.get(f"/api/v1/tasks/{done}/result/?format=png").status_code == 200
            assert api.status(queued)["status"] == "PENDING"

            worker = Worker("cpu", "restart-2", env=env, log=artifacts / "worker-restart.log")
            worker.wait_ready(client.store.redis)
            assert api.wait(queued, timeout=30)["status"] == "SUCCESS"
    finally:
        worker.stop()
        server.stop()


def test_a_job_running_while_redis_restarts_still_succeeds(tmp_path: Path, artifacts: Any) -> None:
    """Redis killed (SIGKILL) and started again under a running job: the job carries on, waits for
    Redis to store its result, and succeeds; progress resumes once Redis is back."""
    from api import create_api

    server = RedisServer(tmp_path / "redis")
    env = {"REDIS_URL": server.url}
    client = JobClient(Settings(redis_url=server.url))
    worker = Worker("cpu", "restart-running", env=env, log=artifacts / "worker-restart-running.log")
    try:
        with TestClient(create_api(lambda: client)) as http:
            api = Api(http)
            worker.wait_ready(client.store.redis)
            running = api.submit(steps_job(steps=100, delay=0.05))
            wait_until(lambda: api.status(running)["progress"] >= 10, 15, what="the job to be under way")

            server.process.kill()  # no shutdown save: what survives is what the append-only file has
            server.process.wait(10)
            assert http.get("/healthz").status_code == 503
            time.sleep(2)  # down for a while (as long as app.py's supervisor may take): the job goes on
            server.start()

            final = api.wait(running, timeout=60)
            assert final["status"] == "SUCCESS", final
            assert http.get(f"/api/v1/tasks/{running}/result/?format=png").status_code == 200
            assert api.wait(api.submit(steps_job(steps=1, delay=0)), timeout=30)["status"] == "SUCCESS"
    finally:
        worker.stop()
        server.stop()
