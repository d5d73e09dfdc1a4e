"""Workers are the unit of scale: three cpu workers share 300 jobs, and killing one mid-run loses none."""

from __future__ import annotations

import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import redis
from fastapi.testclient import TestClient

from jobs import JobClient
from settings import Settings
from tests.integration.conftest import Api
from tests.integration.test_jobs import steps_job
from tests.support.operations import executions_key
from tests.support.stack import Worker, wait_until


def test_three_workers_share_the_queue_and_a_killed_one_loses_nothing(redis_url: str, artifacts: Path) -> None:
    from api import create_api

    url = redis_url.rsplit("/", 1)[0] + "/3"
    db = redis.Redis.from_url(url)
    db.flushdb()
    workers = [
        Worker("cpu", f"scale-{n}", env={"REDIS_URL": url}, log=artifacts / "worker-scale.log") for n in range(3)
    ]
    client = JobClient(Settings(redis_url=url))
    try:
        for worker in workers:
            worker.wait_ready(db)
        with TestClient(create_api(lambda: client)) as http:
            api = Api(http)
            bodies = [steps_job(steps=2, delay=0.03, marker=f"scale-{n}") for n in range(300)]
            with ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(api.submit, bodies))

            wait_until(lambda: sum(1 for t in ids if api.status(t)["status"] == "SUCCESS") >= 60, 60, interval=0.5)
            victim = workers[0]
            main = psutil.Process(victim.process.pid)
            for process in [*main.children(recursive=True), main]:
                process.send_signal(signal.SIGKILL)
            victim.process.wait(10)
            killed_at = time.monotonic()

            def all_done() -> bool:
                return all(api.status(t)["status"] == "SUCCESS" for t in ids)

            wait_until(all_done, 120, interval=1, what="all 300 jobs to succeed")
            finished_in = time.monotonic() - killed_at
            done_by = Counter(
                http.get(f"/api/v1/tasks/{t}/result/").json()["result"]["metadata"]["worker"] for t in ids
            )
            runs = [int(db.get(executions_key(f"scale-{n}")) or 0) for n in range(300)]
    finally:
        for worker in workers:
            worker.stop()
    assert len(done_by) == 3 and all(count > 0 for count in done_by.values()), done_by  # each did some
    assert all(run >= 1 for run in runs)
    assert sum(run > 1 for run in runs) <= 1, Counter(runs)  # only the job the dead worker held ran twice
    assert finished_in < 120
