"""Fair turns between users: how long a second user's job waits while the first has N jobs queued.

    .venv/bin/python benchmarks/teams.py [--sizes 10 100 1000] [--repeat 3] [--baseline 2d8d796]   (make bench runs it)

Two stacks side by side, each ``python app.py`` (embedded Redis, one ``cpu`` worker process, an
idle ``gpu`` one, the web app with ATELIER_AUTH for alice and bob) on a free port with a throw-away
data folder: one from this tree, one from a git worktree of the baseline commit (plain FIFO per
queue: no owners' turns), made in a temporary folder and removed at the end. Both are driven the
same way, through REST, Celery's remote control and reads of the job records in Redis, which the
baseline has too.

One measurement: the cpu worker stops consuming (Celery's ``cancel_consumer``), alice submits N small
jobs (object_removal, telea, 64×64), the worker consumes again and bob at once submits one. Bob's
delay runs from his submit to the ``started`` time the worker writes in his job record; alice's jobs
ahead are hers with an earlier ``started``. Then alice's jobs that have not started are cancelled
through REST and the queue drains before the next measurement. Baseline and this tree alternate;
each N runs ``--repeat`` times on each (1000: once) and the table gives medians.
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
from celery import Celery
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "2d8d796"  # the commit before "Teams": one FIFO per queue (single jobs before batch items)
USERS = {"alice": "alice-password-1", "bob": "bob-password-22"}
QUEUE = "cpu"
# kombu's Redis transport keeps a queue in one list per priority: "cpu", "cpu\x06\x161", ... "cpu\x06\x169"
# (the baseline uses 0, 3, 6 and 9 of them); "unacked" holds what a worker fetched and has not finished.
BROKER_LISTS = [QUEUE, *(f"{QUEUE}\x06\x16{level}" for level in range(1, 10))]


# -- the stacks ------------------------------------------------------------------------------------
@dataclass
class Stack:
    label: str
    http: httpx.Client  # the web app's base URL, no credentials
    db: redis.Redis
    control: Any  # Celery's remote control, on the stack's Redis
    worker: str  # the cpu worker's Celery name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Any, timeout: float, what: str, interval: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return value


def cpu_worker_up(http: httpx.Client) -> bool:
    try:
        return bool(http.get("/healthz").json()["queues"][QUEUE]["workers"])
    except (httpx.HTTPError, KeyError, ValueError):
        return False


def cpu_worker_name(control: Any) -> str | None:
    names = [name for reply in control.ping(timeout=1.0) for name in reply]
    return next((name for name in names if name.startswith(f"{QUEUE}-")), None)


@contextmanager
def stack(tree: Path, label: str) -> Iterator[Stack]:
    """``python app.py`` of ``tree`` (its own code on the path), with access control for alice and bob."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="atelier-teams-") as data:
        env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
        env |= {"ATELIER_DATA_DIR": data, "ATELIER_WORKER_CONCURRENCY": "1", "PYTHONPATH": str(tree),
                "ATELIER_AUTH": ",".join(f"{user}:{password}" for user, password in USERS.items())}  # fmt: skip
        log = Path(data) / "app.log"
        with log.open("wb") as out:
            process = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=tree, env=env,
                                       stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                wait_for(lambda: cpu_worker_up(http) or process.poll() is not None, 120, f"{label}'s stack", 0.3)
                if process.poll() is not None:
                    raise SystemExit(f"{label}'s stack exited; see {log}")
                redis_url = next(line.split("embedded Redis at ")[1].split()[0]
                                 for line in log.read_text().splitlines() if "embedded Redis at " in line)  # fmt: skip
                control = Celery("atelier-teams-bench", broker=redis_url).control
                worker = wait_for(lambda: cpu_worker_name(control), 30, f"{label}'s cpu worker to answer", 0.3)
                yield Stack(label, http, redis.Redis.from_url(redis_url), control, worker)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)


@contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """A git worktree of ``ref`` in a temporary folder, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="atelier-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(path), ref], cwd=ROOT, check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=True)


# -- one measurement -------------------------------------------------------------------------------
def small_job() -> dict[str, Any]:
    def png(image: Image.Image) -> str:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((24, 24, 40, 40), fill=255)
    image = png(Image.new("RGB", (64, 64), (40, 160, 90)))
    return {"task_type": "object_removal", "image": image, "mask": png(mask), "parameters": {"engine": "telea"}}


JOB = small_job()


def submit(stack: Stack, user: str) -> str:
    response = stack.http.post("/api/v1/tasks/submit/", json=JOB, auth=(user, USERS[user]))
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


def cancel(stack: Stack, user: str, task_id: str) -> None:
    stack.http.post(f"/api/v1/tasks/{task_id}/cancel/", auth=(user, USERS[user]))


def started(stack: Stack, ids: list[str]) -> list[float]:
    """Each job's ``started`` (epoch seconds) from its record; infinity for one that has not started."""
    pipe = stack.db.pipeline(transaction=False)
    for task_id in ids:
        pipe.hget(f"atelier:job:{task_id}", "started")
    return [float(value) if value else float("inf") for value in pipe.execute()]


def started_one(stack: Stack, task_id: str) -> float | None:
    at = started(stack, [task_id])[0]
    return at if at < float("inf") else None


def consuming(stack: Stack, on: bool) -> None:
    """Switch the cpu worker's consumer of its queue on or off (its process stays, warm)."""
    call = stack.control.add_consumer if on else stack.control.cancel_consumer
    replies = call(QUEUE, destination=[stack.worker], reply=True, timeout=5.0)
    assert replies, f"{stack.worker} did not answer"
    if not on:
        time.sleep(1.5)  # a BRPOP already waiting when the consumer is cancelled times out after 1 s


def drained(stack: Stack) -> bool:
    pipe = stack.db.pipeline(transaction=False)
    for name in BROKER_LISTS:
        pipe.llen(name)
    pipe.hlen("unacked")
    return not any(pipe.execute())


@dataclass(frozen=True)
class Turn:
    delay: float  # bob's submit → his job started, seconds
    ahead: int  # alice's jobs started before bob's
    submit: float  # seconds alice's N submits took
    gap: float | None  # median seconds between consecutive job starts in the worker (one job's cycle)


def turn(stack: Stack, n: int) -> Turn:
    """Alice queues ``n`` jobs on a paused worker; it resumes and bob submits one; then alice cancels."""
    wait_for(lambda: drained(stack), 120, f"{stack.label}'s queue to drain", 0.05)
    consuming(stack, on=False)
    began = time.perf_counter()
    alice = [submit(stack, "alice") for _ in range(n)]
    submitted = time.perf_counter() - began
    consuming(stack, on=True)
    sent = time.time()
    bob = submit(stack, "bob")
    bob_started: float = wait_for(lambda: started_one(stack, bob), 60 + n * 0.1, f"bob's job on {stack.label}")
    waiting = [task_id for task_id, at in zip(alice, started(stack, alice), strict=True) if at == float("inf")]
    with ThreadPoolExecutor(4) as pool:  # the answers do not matter: a job that started meanwhile runs on
        list(pool.map(lambda task_id: cancel(stack, "alice", task_id), waiting))
    starts = started(stack, alice)
    ran = sorted(at for at in [*starts, bob_started] if at < float("inf"))
    gaps = [later - earlier for earlier, later in itertools.pairwise(ran)]
    return Turn(bob_started - sent, sum(at < bob_started for at in starts), submitted,
                statistics.median(gaps) if gaps else None)  # fmt: skip


# -- the run ---------------------------------------------------------------------------------------
def measure(stacks: list[Stack], sizes: list[int], repeat: int) -> dict[tuple[str, int], list[Turn]]:
    """Every (stack, N) ``repeat`` times (N ≥ 1000: once), the stacks alternating, each first in turn."""
    for each in stacks:  # warm-up: the worker's pool process, connections, the web app's first requests
        turn(each, 5)
    turns: dict[tuple[str, int], list[Turn]] = {}
    for n in sizes:
        for index in range(1 if n >= 1000 else repeat):
            for each in stacks[index % 2 :] + stacks[: index % 2]:
                result = turn(each, n)
                turns.setdefault((each.label, n), []).append(result)
                print(f"  {each.label:8} N={n:<5} bob waited {result.delay:7.3f} s, {result.ahead:4d} of alice's "
                      f"jobs ahead (her submits {result.submit:.2f} s, a job every {(result.gap or 0) * 1000:.1f} ms)",
                      flush=True)  # fmt: skip
    return turns


def report(turns: dict[tuple[str, int], list[Turn]], sizes: list[int], labels: list[str]) -> None:
    def median(label: str, n: int, field: str) -> float:
        return float(statistics.median(getattr(one, field) for one in turns[(label, n)]))

    before, after = labels
    runs = len(turns[(before, sizes[0])])
    print(f"\n### Bob's one job while alice has N queued (one cpu worker process; "
          f"{f'medians of {runs} runs, N = 1000: one run' if runs > 1 else 'one run each'})\n")  # fmt: skip
    print(f"| N | {before}: bob waits s | {before}: alice's jobs ahead | {after}: bob waits s "
          f"| {after}: alice's jobs ahead | alice's N submits s, {before} / {after} |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        print(f"| {n} | {median(before, n, 'delay'):.3f} | {median(before, n, 'ahead'):g} "
              f"| {median(after, n, 'delay'):.3f} | {median(after, n, 'ahead'):g} "
              f"| {median(before, n, 'submit'):.2f} / {median(after, n, 'submit'):.2f} |")  # fmt: skip
    cycle = {label: statistics.median(one.gap for (of, _), measured in turns.items() if of == label for one in measured
                                      if one.gap is not None) * 1000 for label in labels}  # fmt: skip
    print(f"\nA job's cycle in the worker (median gap between consecutive starts): "
          f"{before} {cycle[before]:.1f} ms, {after} {cycle[after]:.1f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000], help="alice's queued jobs")
    parser.add_argument("--repeat", type=int, default=3, help="runs per N below 1000, on each stack")
    parser.add_argument("--baseline", default=BASELINE, help="the commit to compare with (default: before Teams)")
    args = parser.parse_args()
    print(f"Atelier fair-turns benchmark — {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
          f"Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M')}\n"
          f"before: {args.baseline} (one FIFO per queue); after: this tree (owners take turns)")  # fmt: skip
    before, after = "before", "after"
    with worktree(args.baseline) as old, stack(old, before) as baseline, stack(ROOT, after) as current:
        turns = measure([baseline, current], args.sizes, args.repeat)
    report(turns, args.sizes, [before, after])


if __name__ == "__main__":
    main()
