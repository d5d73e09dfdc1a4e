"""Real processes for tests: a redis-server and Celery workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def settle(db: Any, timeout: float = 60) -> None:
    """Wait until every job queued or held by a worker has ended, so that counting keys is not
    disturbed by earlier tests' jobs. (Acks are late: a fetched job sits in ``unacked`` until it
    ends; the message of a job whose worker was killed stays there after the job was sent again
    and finished, until the visibility timeout.) A job has ended when its Celery state is final:
    Celery writes it after the job's output is stored."""

    from jobs import FINISHED
    from settings import QUEUES
    from tasks.store import UNACKED, broker_lists, job_key, message_job_id, queued_key

    def ended(job: str) -> bool:
        meta = db.get(f"celery-task-meta-{job}")
        return not db.exists(job_key(job)) or (meta is not None and json.loads(meta)["status"] in FINISHED)

    def unfinished() -> list[str]:
        pipe = db.pipeline(transaction=True)  # one snapshot: a message is always in one of these
        for queue in QUEUES:  # every priority's list: batch items wait in their own
            pipe.eval("local n = 0 for _, k in ipairs(KEYS) do n = n + redis.call('llen', k) end return n",
                      len(broker_lists(queue)), *broker_lists(queue))  # fmt: skip
        pipe.hvals(UNACKED)
        for queue in QUEUES:
            pipe.zrange(queued_key(queue), 0, -1)
        answers = pipe.execute()
        lengths, held, queued = answers[: len(QUEUES)], answers[len(QUEUES)], answers[len(QUEUES) + 1 :]
        waiting = [f"{queue}: {length} queued" for queue, length in zip(QUEUES, lengths, strict=True) if length]
        jobs = {message_job_id(json.loads(entry)[0]) for entry in held}
        jobs |= {job.decode() for ids in queued for job in ids}
        return waiting + sorted(job for job in jobs if job and not ended(job))

    wait_until(lambda: not unfinished(), timeout, interval=0.1, what="earlier jobs to finish")


# Keys that come and go on their own: the reconciler's 10 s lock, its list of jobs missing on one
# look, kombu's lock around giving back unacked messages.
TRANSIENT = {b"atelier:reconciler", b"atelier:unsent", b"unacked_mutex"}


def waiting_messages(db: Any, *queues: str) -> int:
    """Messages waiting in the broker for ``queues`` (default both), at every priority."""
    from tasks.store import broker_lists

    return sum(int(db.llen(name)) for queue in queues or ("cpu", "gpu") for name in broker_lists(queue))


def stable_keys(db: Any) -> set[bytes]:
    return {key for key in db.scan_iter() if key not in TRANSIENT}


def job_ids(db: Any) -> set[bytes]:
    """The jobs with any key in Redis: a submission adds one; an earlier job finishing adds none."""
    return {key.split(b":")[2] for key in db.scan_iter("atelier:job:*")}


class RedisServer:
    def __init__(self, data_dir: Path, password: str | None = None) -> None:
        sys.path.insert(0, str(ROOT))
        from app import free_port, redis_server_binary

        self.port = free_port()
        self.url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{self.port}/0"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.argv = [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(data_dir),
                     "--appendonly", "yes", "--save", "", "--loglevel", "warning",
                     "--logfile", str(data_dir / "redis.log"),
                     *(["--requirepass", password] if password else [])]  # fmt: skip
        self.start()

    def start(self) -> None:
        """Start (or start again, on the same port and append-only file)."""
        self.process = subprocess.Popen(self.argv)
        client = redis.Redis.from_url(self.url)
        wait_until(lambda: _pings(client), 10, what="redis-server")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False


class Worker:
    """``celery worker`` in its own process, consuming ``queue``, registered via its heartbeat."""

    def __init__(self, queue: str, name: str, env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.queue, self.hostname = queue, f"{name}@test"
        self.env = {**os.environ, **(env or {})}
        out = log.open("ab") if log else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.worker", "-Q", queue, "-n", self.hostname, "-c", "1",
             "--pool", "prefork", "--without-mingle", "--without-gossip", "--loglevel", "INFO"],
            cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, client: redis.Redis, timeout: float = 30) -> Worker:
        from tasks.store import workers_key

        def registered() -> bool:
            assert self.process.poll() is None, f"worker {self.hostname} exited with {self.process.returncode}"
            return client.zscore(workers_key(self.queue), self.hostname) is not None

        wait_until(registered, timeout, what=f"worker {self.hostname}")
        return self

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_app(env: dict[str, str], log: Path, *args: str, timeout: float = 60) -> tuple[subprocess.Popen[bytes], Any]:
    """``python app.py --port <free> *args`` (its output appended to ``log``), once /healthz shows a
    worker on each queue; returns the process and an httpx client for it."""
    import httpx

    from app import free_port

    port = free_port()
    with log.open("ab") as out:  # the child keeps its own descriptor
        argv = [sys.executable, "app.py", "--port", str(port), *args]
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def ready() -> bool:
        assert process.poll() is None, f"app.py exited with {process.returncode}; see {log}"
        try:
            queues = http.get("/healthz").json()["queues"]
        except httpx.HTTPError:
            return False
        return bool(queues["gpu"]["workers"] and queues["cpu"]["workers"])

    wait_until(ready, timeout, interval=0.3, what="app.py's stack")
    return process, http


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve an ASGI app on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    from app import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, what="the web server")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
