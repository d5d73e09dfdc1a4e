"""Stopping within ATELIER_STOP_TIMEOUT: the running job handed back, no process outliving app.py.

Real processes throughout: ``python app.py`` (its embedded Redis and workers, which know the test
operation through a ``sitecustomize`` on their path), and standalone workers on a Redis of their own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis

from jobs import JobClient, JobState
from settings import Settings
from tests.integration.test_jobs import steps_job
from tests.support.operations import executions_key
from tests.support.stack import RedisServer, Worker, start_app, wait_until

ROOT = Path(__file__).resolve().parents[2]
BOUND = 10.0  # docker's grace period: everything must be gone before it


def family(process: psutil.Process) -> list[psutil.Process]:
    """The process and everything below it, as they are now."""
    try:
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def gone_within(processes: list[psutil.Process], seconds: float) -> float:
    """Seconds until every one of ``processes`` has exited; fails past ``seconds``."""
    started = time.monotonic()
    _, alive = psutil.wait_procs(processes, timeout=seconds)
    assert not alive, f"still alive after {seconds} s: {[(p.pid, p.cmdline()) for p in alive]}"
    return time.monotonic() - started


# -- a standalone worker (split deployment) ------------------------------------------------------
@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    if server.process.poll() is None:
        server.stop()


def start_worker(server: RedisServer, name: str, artifacts: Path, stop_timeout: float = 5) -> Worker:
    env = {"REDIS_URL": server.url, "ATELIER_STOP_TIMEOUT": str(stop_timeout)}
    return Worker("cpu", name, env=env, log=artifacts / f"worker-{name}.log").wait_ready(
        redis.Redis.from_url(server.url)
    )


def test_sigterm_hands_the_running_job_back_and_another_worker_runs_it(own_redis: RedisServer, artifacts: Path) -> None:
    db = redis.Redis.from_url(own_redis.url)
    client = JobClient(Settings(redis_url=own_redis.url))
    first = start_worker(own_redis, "stop-first", artifacts)
    job = client.submit(steps_job(steps=100, delay=0.1, marker="handed-back")).task_id  # 10 s of steps
    wait_until(lambda: client.status(job).progress >= 4, 20, what="the job to be under way")
    processes = family(psutil.Process(first.process.pid))
    assert len(processes) >= 2  # the worker and its pool process

    first.process.send_signal(signal.SIGTERM)
    assert gone_within(processes, BOUND) < 8  # it stopped at the next step, not at the job's end (9.6 s on)
    status = client.status(job)
    assert status.status == JobState.PENDING and "requeued after a restart" in status.message
    assert db.hget(f"atelier:job:{job}", "attempts") == b"0"  # no attempt lost to a dead worker

    second = start_worker(own_redis, "stop-second", artifacts)
    try:
        wait_until(lambda: client.status(job).finished, 60, what="the handed-back job to finish")
        assert client.status(job).status == JobState.SUCCESS
        assert db.get(executions_key("handed-back")) == b"2"  # the handed-back run and this one
        assert db.hget(f"atelier:job:{job}", "attempts") == b"1"
    finally:
        second.stop()


def test_a_worker_stops_in_time_with_redis_unreachable(own_redis: RedisServer, artifacts: Path) -> None:
    client = JobClient(Settings(redis_url=own_redis.url))
    worker = start_worker(own_redis, "stop-no-redis", artifacts)
    job = client.submit(steps_job(steps=600, delay=0.1)).task_id  # a minute of steps
    wait_until(lambda: client.status(job).status == JobState.PROCESSING, 20, what="the job to start")
    processes = family(psutil.Process(worker.process.pid))
    own_redis.process.send_signal(signal.SIGSTOP)  # Redis stalls: every call times out
    try:
        worker.process.send_signal(signal.SIGTERM)
        gone_within(processes, BOUND)
    finally:
        own_redis.process.send_signal(signal.SIGCONT)


def test_a_second_sigterm_stops_a_worker_at_once(own_redis: RedisServer, artifacts: Path) -> None:
    client = JobClient(Settings(redis_url=own_redis.url))
    worker = start_worker(own_redis, "stop-twice", artifacts, stop_timeout=30)  # its watchdog: 28.5 s
    job = client.submit(steps_job(steps=3, delay=10)).task_id  # long steps: no progress to stop at soon
    wait_until(lambda: client.status(job).status == JobState.PROCESSING, 20, what="the job to start")
    processes = family(psutil.Process(worker.process.pid))
    worker.process.send_signal(signal.SIGTERM)
    time.sleep(1.5)  # a second signal closer to the first counts as the same one (see tasks/shutdown.py)
    worker.process.send_signal(signal.SIGTERM)
    assert gone_within(processes, BOUND) < 8  # not the watchdog's 28.5 s, nor the job's 30 s


LAUNCHER = (
    "import os, subprocess, sys, time; os.environ['ATELIER_SUPERVISOR_PID'] = str(os.getpid()); "
    "subprocess.Popen(sys.argv[1:]); time.sleep(600)"
)


def test_a_worker_leaves_by_itself_when_the_app_py_that_started_it_dies(
    own_redis: RedisServer, artifacts: Path
) -> None:
    """No signal at all reaches the worker (its parent sets no PDEATHSIG): its own watchdog notices."""
    client = JobClient(Settings(redis_url=own_redis.url))
    argv = [sys.executable, "-m", "tests.support.worker", "-Q", "cpu", "-n", "orphan@test", "-c", "1",
            "--pool", "prefork", "--without-mingle", "--without-gossip", "--loglevel", "INFO"]  # fmt: skip
    env = {**os.environ, "REDIS_URL": own_redis.url}
    with (artifacts / "worker-orphan.log").open("ab") as log:
        launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, *argv], cwd=ROOT, env=env, stdout=log, stderr=log)
    job = client.submit(steps_job(steps=600, delay=0.1)).task_id  # a minute of steps
    wait_until(lambda: client.status(job).progress >= 5, 60, what="the job to be under way")
    processes = family(psutil.Process(launcher.pid))[1:]
    assert len(processes) >= 2  # the worker and its pool process
    launcher.kill()
    launcher.wait()
    assert gone_within(processes, BOUND) < 8  # its 2 s grace and Celery's shutdown, not the job's minute
    status = client.status(job)
    assert status.status == JobState.PENDING and "requeued after a restart" in status.message
    # handed back once, not taken again in its grace: no attempt counted, the message queued once
    assert redis.Redis.from_url(own_redis.url).hget(f"atelier:job:{job}", "attempts") == b"0"


# -- python app.py ---------------------------------------------------------------------------------
@pytest.fixture
def studio_env(tmp_path: Path) -> dict[str, str]:
    """app.py's environment: its own data dir, and the test operation known to every Python process."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("from tests.support.operations import register\nregister()\n")
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "ATELIER_REDIS_URL")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    env["ATELIER_DATA_DIR"] = str(tmp_path / "data")
    return env


def start_studio(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    process, http = start_app(env, log, timeout=90)
    return process, http


def submit_running(http: httpx.Client, **parameters: Any) -> str:
    response = http.post("/api/v1/tasks/submit/", json=steps_job(**parameters))
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]

    def running() -> bool:
        return bool(http.get(f"/api/v1/tasks/{task_id}/status/").json()["progress"] >= 5)

    wait_until(running, 30, what="the job to be under way")
    return task_id


def test_sigterm_stops_app_py_within_the_bound_and_the_next_start_runs_the_job(
    studio_env: dict[str, str], artifacts: Path
) -> None:
    log = artifacts / "app-stopping.log"
    process, http = start_studio(studio_env, log)
    task_id = submit_running(http, steps=100, delay=0.1, marker="across-a-restart")
    processes = family(psutil.Process(process.pid))
    assert len(processes) >= 5  # app.py, Redis, two workers and their pool processes
    process.send_signal(signal.SIGTERM)
    gone_within(processes, BOUND)

    process, http = start_studio(studio_env, log)  # the same data dir: the append-only file kept the job
    try:
        status = http.get(f"/api/v1/tasks/{task_id}/status/").json()
        assert status["status"] in ("PENDING", "PROCESSING", "SUCCESS"), status

        def finished() -> bool:
            return bool(http.get(f"/api/v1/tasks/{task_id}/status/?wait=5").json()["status"] == "SUCCESS")

        wait_until(finished, 60, interval=0, what="the job to finish after the restart")
        url = next(line for line in log.read_text().splitlines()[::-1] if "embedded Redis at" in line).split()[-4]
        assert redis.Redis.from_url(url).get(executions_key("across-a-restart")) == b"2"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(BOUND)


@pytest.mark.parametrize("with_redis", [False, True], ids=["app.py", "app.py and its Redis"])
def test_no_process_outlives_a_killed_app_py(studio_env: dict[str, str], artifacts: Path, with_redis: bool) -> None:
    process, http = start_studio(studio_env, artifacts / "app-killed.log")
    submit_running(http, steps=600, delay=0.1)
    processes = family(psutil.Process(process.pid))
    victims = [process.pid]
    if with_redis:
        victims += [p.pid for p in processes if "redis-server" in " ".join(p.cmdline())]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    gone_within(processes, BOUND)
