"""Atelier's batch benchmark: a batch through REST and the workers against a plain loop over the same pipeline.

    .venv/bin/python benchmarks/batch.py [--items 200] [--repeat 5] [--job style|telea]   (make bench runs it)
    .venv/bin/python benchmarks/batch.py --profile cpu|wall [--items 200]   (where a worker's time goes)

The baseline is what ``rembg p`` does: one process decodes each input, runs the pipeline and
encodes the PNG, the model loaded once before timing, as a worker loads it once. Against it: a
batch submitted through ``POST /api/v1/batches/`` and run by one worker process, then by two (a
second ``cpu`` worker, switched on and off with Celery's ``add_consumer``/``cancel_consumer`` so that
both keep their model warm), and two plain loops side by side (what two processes can do on this
machine with no queue at all). Runs are interleaved and the tables give medians. Last: how long a
single job submitted while a batch runs waits to start, and how many batch items start meanwhile.
With ``--profile``, one batch runs instead on a worker under cProfile (benchmarks/profile_worker.py).
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import psutil
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from run import encode, stack, table, timed  # noqa: E402  (benchmarks/run.py: the stack and the table printer)

PHOTO = ROOT / "tests" / "images" / "coffee.jpg"
QUEUE = "cpu"
# style_transfer's registry queue is gpu; this machine has no GPU, and the benchmark runs on the cpu queue.
ROUTES = json.dumps({"style_transfer": QUEUE})


# -- the job ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SmallJob:
    label: str
    task_type: str
    parameters: dict[str, Any]
    image: bytes
    shared: dict[str, bytes] = field(default_factory=dict)  # images every item shares (a mask)

    def fields(self) -> dict[str, Any]:
        shared = {name: base64.b64encode(data).decode() for name, data in self.shared.items()}
        return {"task_type": self.task_type, "parameters": self.parameters, **shared}

    def batch_body(self, items: int) -> dict[str, Any]:
        image = base64.b64encode(self.image).decode()
        return {**self.fields(), "items": [{"image": image, "name": f"item-{i:03d}"} for i in range(items)]}

    def single_body(self) -> dict[str, Any]:
        return {**self.fields(), "image": base64.b64encode(self.image).decode()}


def small_job(kind: str) -> SmallJob:
    photo = Image.open(PHOTO).convert("RGB")
    if kind == "style":
        image = encode(photo.resize((256, 256), Image.Resampling.LANCZOS), "JPEG")
        return SmallJob("style_transfer, engine fast, preset mosaic, 256×256 JPEG", "style_transfer",
                        {"engine": "fast", "style": "mosaic"}, image)  # fmt: skip
    image = encode(photo.resize((320, 240), Image.Resampling.LANCZOS), "JPEG")
    mask = Image.new("L", (320, 240), 0)
    ImageDraw.Draw(mask).ellipse((140, 100, 180, 140), fill=255)
    return SmallJob("object_removal, engine telea, 320×240 JPEG + PNG mask", "object_removal",
                    {"engine": "telea"}, image, {"mask": encode(mask)})  # fmt: skip


# -- the baseline: a plain loop, one process -------------------------------------------------------
class Loop:
    """Decode, run, encode the PNG, item after item; the model loads on the first (untimed) item."""

    def __init__(self, job: SmallJob) -> None:
        from pipelines import OPERATIONS
        from pipelines.validation import validate_parameters
        from settings import Settings

        self.job, self.settings = job, Settings()
        self.operation = OPERATIONS[job.task_type]
        self.parameters, errors = validate_parameters(self.operation, job.parameters)
        assert not errors, errors
        self.item()

    def item(self) -> float:
        """One item; returns the engine's own run lap (seconds), as a worker's result reports it."""
        from pipelines.base import JobInput, no_progress
        from pipelines.images import encode_png, open_image

        inputs = {"image": self.job.image, **self.job.shared}
        images = {name: open_image(data, self.settings.max_pixels) for name, data in inputs.items()}
        output = self.operation.run(JobInput(images, self.parameters, settings=self.settings), no_progress)
        encode_png(output.image)
        return float(output.metadata["timings"]["run"])


def serve_loop(kind: str, connection: Connection) -> None:
    """A loop process: warm up, then on each (items, start at) order run that many items and answer
    (start, end, CPU seconds: this process's, its onnxruntime threads included, median engine lap)."""
    loop = Loop(small_job(kind))
    connection.send("ready")
    while (order := connection.recv()) is not None:
        items, start_at = order
        time.sleep(max(0.0, start_at - time.time()))
        started, cpu = time.time(), time.process_time()
        engine = [loop.item() for _ in range(items)]
        connection.send((started, time.time(), time.process_time() - cpu, statistics.median(engine)))


@dataclass(frozen=True)
class LoopRun:
    rate: float  # items per second
    cpu: float  # CPU ms per item
    engine: float  # median ms of the engine's own run


class LoopProcesses:
    """Plain loops in processes of their own (spawned, so that none inherits this one's threads)."""

    def __init__(self, kind: str, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.connections, self.processes = [], []
        for _ in range(count):
            mine, theirs = context.Pipe()
            process = context.Process(target=serve_loop, args=(kind, theirs), daemon=True)
            process.start()
            self.connections.append(mine)
            self.processes.append(process)
        for connection in self.connections:
            assert connection.recv() == "ready"

    def run(self, items: int, processes: int) -> LoopRun:
        """``processes`` loops side by side, ``items`` in all."""
        start_at = time.time() + 0.2
        for connection in self.connections[:processes]:
            connection.send((items // processes, start_at))
        spans: list[tuple[float, ...]] = [connection.recv() for connection in self.connections[:processes]]
        done = items // processes * processes
        elapsed = max(span[1] for span in spans) - min(span[0] for span in spans)
        engine = statistics.median(span[3] for span in spans) * 1000
        return LoopRun(done / elapsed, sum(span[2] for span in spans) * 1000 / done, engine)

    def close(self) -> None:
        for connection, process in zip(self.connections, self.processes, strict=True):
            connection.send(None)
            process.join(10)


# -- the stack's second worker ---------------------------------------------------------------------
@contextmanager
def second_worker(redis_url: str, log: Path, app: str = "tasks", **env: str) -> Iterator[tuple[str, int]]:
    """A second ``cpu`` worker (one process), as app.py starts one; yields its Celery name and pid."""
    from app import worker

    argv = [app if arg == "tasks" else arg for arg in worker(QUEUE, 1).argv]  # -A tasks, or a profiling wrapper
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, "REDIS_URL": redis_url, **env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    name = f"{QUEUE}-{os.getpid()}@"  # app.worker names it "<queue>-<pid of its starter>@<host>"
    try:
        deadline = time.monotonic() + 60
        while not (names := [n for n in workers() if n.startswith(name)]):
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"the second worker did not start; see {log}")
        yield names[0], process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def workers() -> list[str]:
    """The Celery names of the workers that answer a ping within half a second."""
    return [name for reply in control().ping(timeout=0.5) for name in reply]


class StackCpu:
    """CPU seconds used so far by the stack's parts: the cpu queue's workers, the web app, Redis."""

    def __init__(self, app: psutil.Process, second_pid: int) -> None:
        self.parts: dict[str, list[psutil.Process]] = {"workers": [], "web": [app], "redis": []}
        for child in [*app.children(), psutil.Process(second_pid)]:
            command = " ".join(child.cmdline())
            if "redis-server" in command:
                self.parts["redis"].append(child)
            elif f"-Q {QUEUE}" in command:
                self.parts["workers"] += [child, *child.children(recursive=True)]

    def seconds(self) -> dict[str, float]:
        return {part: sum(sum(p.cpu_times()[:2]) for p in processes) for part, processes in self.parts.items()}


_control: list[Any] = []


def control() -> Any:
    """The Celery app's remote control (one per benchmark process)."""
    if not _control:
        from settings import Settings
        from tasks.celery_app import make_celery

        _control.append(make_celery(Settings()).control)
    return _control[0]


def consuming(worker_name: str, on: bool) -> None:
    """Switch the second worker's consumer of the cpu queue on or off; its process and model stay."""
    call = control().add_consumer if on else control().cancel_consumer
    replies = call(QUEUE, destination=[worker_name], reply=True, timeout=5)
    if not replies:
        raise SystemExit(f"{worker_name} did not answer {call.__name__}")
    time.sleep(1.5)  # a BRPOP already waiting when the consumer is cancelled times out after 1 s


# -- reading what happened, from Redis -------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    started: float
    done: float
    worker: str
    runtime: float  # the task's own measure: read + decode the inputs, run the engine, progress
    engine: float  # the engine's own run lap


def read_items(redis: Any, task_ids: list[str]) -> list[Item]:
    """Each item's start (job record), end (the Celery result's date_done) and run times."""
    from tasks.store import job_key

    pipe = redis.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.hmget(job_key(task_id), "started", "worker")
        pipe.get(f"celery-task-meta-{task_id}")
    answers = pipe.execute()
    items = []
    for (started, worker), raw in zip(answers[::2], answers[1::2], strict=True):
        meta = json.loads(raw) if raw else {}
        if started is None or meta.get("status") != "SUCCESS":
            continue
        metadata = meta["result"]["metadata"]
        items.append(
            Item(
                started=float(started),
                done=datetime.fromisoformat(meta["date_done"]).timestamp(),
                worker=worker.decode(),
                runtime=metadata["runtime"],
                engine=metadata.get("timings", {}).get("run", float("nan")),
            )
        )
    return items


def wait_idle(redis: Any, timeout: float = 120.0) -> None:
    """Until no message waits in the cpu queue's lists, none is unacked, and no job runs."""
    from tasks.store import RUNNING, UNACKED, broker_lists

    deadline = time.monotonic() + timeout
    while True:
        pipe = redis.pipeline(transaction=False)
        for name in broker_lists(QUEUE):
            pipe.llen(name)
        pipe.hlen(UNACKED)
        pipe.zcard(RUNNING)
        if not any(pipe.execute()):
            return
        if time.monotonic() > deadline:
            raise SystemExit("the queue did not empty")
        time.sleep(0.05)


def forget(redis: Any, task_ids: list[str], batch_id: str | None) -> None:
    """Delete the jobs' keys (so that Redis holds one batch at a time, not ten)."""
    from tasks.store import batch_key, input_key, job_key, output_key

    keys = [batch_key(batch_id)] if batch_id else []
    for task_id in task_ids:
        keys += [job_key(task_id), input_key(task_id, "image"), input_key(task_id, "mask"), output_key(task_id)]
        keys.append(f"celery-task-meta-{task_id}")
    for start in range(0, len(keys), 500):
        redis.delete(*keys[start : start + 500])


# -- the batch through REST ------------------------------------------------------------------------
JSON = {"Content-Type": "application/json"}
FINISHED = ("SUCCESS", "FAILURE", "REVOKED")
POLL = 1.0  # seconds between batch status requests (one costs the web app ~40 ms of CPU for 200 items)


@dataclass(frozen=True)
class BatchRun:
    rate: float  # items per second, from the submit to the last item's end
    per_worker: list[int]  # items each worker process ran
    lead: float  # ms from the submit to the first item's start (validation, storing, sending 200 items)
    wall: float  # median ms from an item's start to its end, in the worker
    runtime: float  # median ms of the task's own runtime (inputs read and decoded, engine, progress)
    engine: float  # median ms of the engine's run
    gap: float  # median ms from a worker's item ending to its next item starting
    cpu: dict[str, float]  # CPU ms per item of the cpu queue's workers, the web app and Redis
    polls: int  # batch status requests while it ran
    status: float  # ms of one batch status request (client side), once it has ended


def submit_batch(http: httpx.Client, job: SmallJob, items: int) -> tuple[float, str, list[str]]:
    """(when it was submitted, batch id, task ids); the JSON is built before the clock starts."""
    content = json.dumps(job.batch_body(items)).encode()
    submitted = time.time()
    answer = http.post("/api/v1/batches/", content=content, headers=JSON)
    answer.raise_for_status()
    return submitted, answer.json()["batch_id"], answer.json()["task_ids"]


def run_batch(http: httpx.Client, redis: Any, job: SmallJob, items: int, cpu: StackCpu) -> BatchRun:
    """Submit → every item SUCCESS, seen through ``GET /batches/{id}/`` polled every POLL seconds; the
    end is the last item's ``date_done``, so the poll's period does not count."""
    wait_idle(redis)
    before = cpu.seconds()
    submitted, batch_id, task_ids = submit_batch(http, job, items)
    polls = 1
    while (status := http.get(f"/api/v1/batches/{batch_id}/").json())["status"] not in FINISHED:
        time.sleep(POLL)
        polls += 1
    assert status["status"] == "SUCCESS", status["message"]
    used = {part: (seconds - before[part]) * 1000 / items for part, seconds in cpu.seconds().items()}
    request = statistics.median(timed(lambda: http.get(f"/api/v1/batches/{batch_id}/"), 3)) * 1000
    ran = read_items(redis, task_ids)
    assert len(ran) == items, f"{len(ran)} of {items} items read back"
    forget(redis, task_ids, batch_id)
    return summarise(submitted, ran, used, polls, request)


def summarise(submitted: float, items: list[Item], cpu: dict[str, float], polls: int, request: float) -> BatchRun:
    by_worker: dict[str, list[Item]] = {}
    for item in sorted(items, key=lambda item: item.started):
        by_worker.setdefault(item.worker, []).append(item)
    gaps = [after.started - before.done for run in by_worker.values() for before, after in itertools.pairwise(run)]
    return BatchRun(
        rate=len(items) / (max(item.done for item in items) - submitted),
        per_worker=sorted((len(run) for run in by_worker.values()), reverse=True),
        lead=(min(item.started for item in items) - submitted) * 1000,
        wall=statistics.median(item.done - item.started for item in items) * 1000,
        runtime=statistics.median(item.runtime for item in items) * 1000,
        engine=statistics.median(item.engine for item in items) * 1000,
        gap=statistics.median(gaps) * 1000 if gaps else float("nan"),
        cpu=cpu,
        polls=polls,
        status=request,
    )


def submit_single(http: httpx.Client, redis: Any, job: SmallJob) -> tuple[str, float, float]:
    """(task id, when it was submitted, when it started: its record's ``started``)."""
    from tasks.store import job_key

    content = json.dumps(job.single_body()).encode()
    submitted = time.time()
    answer = http.post("/api/v1/tasks/submit/", content=content, headers=JSON)
    answer.raise_for_status()
    task_id: str = answer.json()["task_id"]
    deadline = time.monotonic() + 60
    while (started := redis.hget(job_key(task_id), "started")) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"job {task_id} did not start within 60 s")
        time.sleep(0.002)
    return task_id, submitted, float(started)


def delay_during_batch(http: httpx.Client, redis: Any, job: SmallJob, items: int) -> tuple[float, int]:
    """(ms from submitting a single job to its start while a batch runs, batch items started meanwhile);
    the single is submitted once the first 3 items have finished, and the rest of the batch is cancelled."""
    from tasks.store import job_key

    wait_idle(redis)
    _, batch_id, task_ids = submit_batch(http, job, items)
    first = [job_key(task_id) for task_id in task_ids[:3]]  # a queue's items start in order
    while not all(redis.hget(key, "outcome") for key in first):  # Redis, not the busy web app
        time.sleep(0.01)
    single, submitted, started = submit_single(http, redis, job)
    http.post(f"/api/v1/batches/{batch_id}/cancel/").raise_for_status()
    wait_idle(redis)
    pipe = redis.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.hget(job_key(task_id), "started")
    between = sum(1 for start in pipe.execute() if start is not None and submitted < float(start) < started)
    forget(redis, [*task_ids, single], batch_id)
    return (started - submitted) * 1000, between


def idle_delay(http: httpx.Client, redis: Any, job: SmallJob) -> float:
    """ms from submitting a single job to its start on an idle stack."""
    wait_idle(redis)
    single, submitted, started = submit_single(http, redis, job)
    wait_idle(redis)
    forget(redis, [single], None)
    return (started - submitted) * 1000


# -- the run ---------------------------------------------------------------------------------------
Results = dict[str, list[Any]]  # loop, loop-2: LoopRun; batch-1, batch-2: BatchRun; delay-1, delay-2, idle


@dataclass
class Session:
    """What every measurement needs: the REST client, Redis, the job, and the stack's CPU counters."""

    http: httpx.Client
    redis: Any
    job: SmallJob
    cpu: StackCpu

    def batch(self, items: int) -> BatchRun:
        return run_batch(self.http, self.redis, self.job, items, self.cpu)


def warm_up(session: Session) -> None:
    """Small batches with both workers on, until each worker process has loaded its model."""
    for _ in range(5):
        if len(session.batch(12).per_worker) == 2:
            return
    raise SystemExit("the second worker took no item of the warm-up batches")


def measure(base_url: str, redis_url: str, app: psutil.Process, args: argparse.Namespace, logs: Path) -> Results:
    """Loops and batches interleaved: one loop and two loops side by side, then a batch (1 worker process,
    then 2, in turns) and a single job's delay while one runs; loops again after the last batch. Every
    batch lies between two loop runs of each kind, its reference (the mean of the two)."""
    import redis

    job, results = small_job(args.job), dict[str, list[Any]]()
    loops = LoopProcesses(args.job, 2)

    def loop_pair() -> None:
        results.setdefault("loop", []).append(loops.run(args.loop_items, 1))
        results.setdefault("loop-2", []).append(loops.run(args.loop_items, 2))

    try:
        with (
            second_worker(redis_url, logs / "second-worker.log") as (second, pid),
            httpx.Client(base_url=base_url, timeout=120) as http,
        ):
            session = Session(http, redis.Redis.from_url(redis_url), job, StackCpu(app, pid))
            warm_up(session)
            for _ in range(args.repeat):
                for processes in (1, 2):
                    loop_pair()
                    consuming(second, processes == 2)
                    results.setdefault(f"batch-{processes}", []).append(session.batch(args.items))
                    delay = delay_during_batch(http, session.redis, job, args.items)
                    results.setdefault(f"delay-{processes}", []).append(delay)
                results.setdefault("idle", []).append(idle_delay(http, session.redis, job))
            loop_pair()
    finally:
        loops.close()
    return results


def bracketed(results: Results, processes: int, loop: str) -> list[float]:
    """Each batch's items/s per process ÷ the mean items/s per process of the ``loop`` runs just before and after it."""
    ratios = []
    for index, batch in enumerate(results[f"batch-{processes}"]):
        at = 2 * index + processes - 1  # the loop pair run just before this batch
        around = [results[loop][at].rate, results[loop][at + 1].rate]
        per_loop_process = 1 if loop == "loop" else 2
        ratios.append(batch.rate / processes / (statistics.mean(around) / per_loop_process))
    return ratios


def median_of(runs: list[Any], name: str) -> float:
    return float(statistics.median(getattr(run, name) for run in runs))


def listed(values: list[float], digits: int = 1) -> str:
    return ", ".join(f"{value:.{digits}f}" for value in values)


RUNS = (  # (row, processes, results key)
    ("plain loop, one process (decode, run, encode PNG)", 1, "loop"),
    ("batch through REST, 1 worker process", 1, "batch-1"),
    ("two plain loops side by side", 2, "loop-2"),
    ("batch through REST, 2 worker processes", 2, "batch-2"),
)


def throughput_table(label: str, items: int, results: Results) -> None:
    """Items/s of each run, and each batch against the loops run just before and after it."""
    rows = []
    for name, processes, key in RUNS:
        runs = results[key]
        cells: list[Any] = [name, processes, median_of(runs, "rate"), listed([run.rate for run in runs])]
        if key.startswith("batch"):
            versus_one = bracketed(results, processes, "loop")
            cells += [statistics.median(versus_one), listed(versus_one, 2)]
            versus_two = bracketed(results, processes, "loop-2") if processes == 2 else []
            cells += [f"{statistics.median(versus_two):.2f}" if versus_two else "—", listed(versus_two, 2) or "—"]
            cells.append(", ".join("+".join(map(str, run.per_worker)) for run in runs))
        else:
            cells += ["—", "—", "—", "—", "—"]
        rows.append(cells)
    table(
        f"Batch throughput: {label}, {items}-item batches, {len(results['batch-1'])} runs each, interleaved with "
        f"{len(results['loop'])} loop runs of each kind (medians)",
        ["run", "processes", "items/s", "runs", "per process × one loop", "runs", "× two loops side by side",
         "runs", "items per worker"],
        rows,
    )  # fmt: skip


def phases_table(items: int, results: Results) -> None:
    """Per item, in ms: the time per process, the phases of a batch item, and the CPU each part used."""
    rows: list[list[Any]] = [
        ["wall time per item per process (1000 × processes ÷ items/s)",
         *(1000 * processes / median_of(results[key], "rate") for _, processes, key in RUNS)],
    ]  # fmt: skip
    for name, field_name, scale in (
        ("submit → first item starts, ÷ items", "lead", items),
        ("item start → end, in the worker", "wall", 1),
        ("  of which the task's runtime (inputs read and decoded, engine, progress)", "runtime", 1),
        ("    of which the engine's own run", "engine", 1),
        ("item end → the same worker's next item starts", "gap", 1),
    ):
        rows.append([name, *(median_of(results[key], field_name) / scale if hasattr(results[key][0], field_name)
                             else "—" for _, _, key in RUNS)])  # fmt: skip
    rows.append(["CPU per item: the loop process(es)", *(median_of(results[key], "cpu") if "loop" in key else "—"
                                                         for _, _, key in RUNS)])  # fmt: skip
    for part, name in (("workers", "the cpu workers (main + pool)"), ("web", "the web app"), ("redis", "Redis")):
        cells = [statistics.median(run.cpu[part] for run in results[key]) if "batch" in key else "—"
                 for _, _, key in RUNS]  # fmt: skip
        rows.append([f"CPU per item: {name}", *cells])
    table(
        "Where an item's time goes (ms, medians; start = the job record's `started`, end = the result's `date_done`)",
        ["per item", *(name.split(" (")[0] for name, _, _ in RUNS)],
        rows,
    )
    batches = results["batch-1"] + results["batch-2"]
    print(f"\nThe web app's CPU includes the batch status requests ({POLL:.0f} s apart, "
          f"{median_of(batches, 'polls'):.0f} per batch): one for {items} items takes "
          f"{median_of(batches, 'status'):.1f} ms (client side, median).")  # fmt: skip


def delay_table(results: Results) -> None:
    rows: list[list[Any]] = [["idle stack", statistics.median(results["idle"]), listed(results["idle"]), "—"]]
    for name, key in (("batch running, 1 worker process", "delay-1"), ("batch running, 2 worker processes", "delay-2")):
        delays = [delay for delay, _ in results[key]]
        rows.append([name, statistics.median(delays), listed(delays), ", ".join(str(n) for _, n in results[key])])
    table(
        "A single job submitted while the batch runs (after 3 items finished): submit → its start",
        ["stack", "start delay ms", "runs", "batch items started meanwhile"],
        rows,
    )


TARGET = 0.8  # issue 14: a batch on N worker processes at 0.8× or more of N plain loops side by side


def verdict(results: Results) -> None:
    """The targets read against this run: each batch against as many plain loop processes as it had
    worker processes, side by side (one loop for one process), and the single job's start."""
    ratios = {1: bracketed(results, 1, "loop"), 2: bracketed(results, 2, "loop-2")}
    print()
    for processes, values in ratios.items():
        median = statistics.median(values)
        loops = "one plain loop" if processes == 1 else "two plain loops side by side"
        met = "met" if median >= TARGET else "NOT met"
        print(f"- {processes} worker process{'es' if processes > 1 else ''} against {loops}: {median:.2f}× "
              f"(median of {listed(values, 2)}); target ≥ {TARGET}×: {met}")  # fmt: skip
    for processes, key in ((1, "delay-1"), (2, "delay-2")):
        started = max(n for _, n in results[key])
        met = "met" if started <= processes else "NOT met"
        print(f"- single job during a batch on {processes} worker process{'es' if processes > 1 else ''}: at most "
              f"{started} batch item(s) started before it; target ≤ {processes}: {met}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=200, help="items per batch")
    parser.add_argument("--loop-items", type=int, default=60, help="items per plain loop run (a rate needs fewer)")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs of each measurement")
    parser.add_argument("--job", choices=("style", "telea"), default="style", help="the small job")
    parser.add_argument("--profile", choices=("cpu", "wall"), help="instead: one batch on a worker under cProfile")
    args = parser.parse_args()
    print(f"Atelier batch benchmark — {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
          f"Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip
    os.environ.setdefault("ATELIER_QUEUES", ROUTES)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as logs, stack() as (base_url, redis_url, app):
        os.environ["REDIS_URL"] = redis_url
        if args.profile:
            profile(base_url, redis_url, app, small_job(args.job), args.items, Path(logs), args.profile)
            return
        results = measure(base_url, redis_url, app, args, Path(logs))
    throughput_table(small_job(args.job).label, args.items, results)
    phases_table(args.items, results)
    delay_table(results)
    verdict(results)
    print(f"\n(ran {time.monotonic() - started:.0f} s; the cpu queue's workers and the web app share this machine's "
          f"{os.cpu_count()} cores with Redis, app.py's idle gpu worker and the loops)")  # fmt: skip


# -- where the time goes: cProfile in a worker -----------------------------------------------------
def profile(
    base_url: str, redis_url: str, app: psutil.Process, job: SmallJob, items: int, logs: Path, clock: str
) -> None:
    """One batch on a worker under cProfile (benchmarks/profile_worker.py), app.py's cpu worker switched
    off; prints the functions with the most cumulative time, in ms per item, for each of its processes."""
    import redis

    others = [name for name in workers() if name.startswith(f"{QUEUE}-")]
    warm = 4
    env = {"ATELIER_BENCH_PROFILE": str(logs / "profile"), "ATELIER_BENCH_PROFILE_TASKS": str(warm + items),
           "ATELIER_BENCH_PROFILE_CLOCK": clock}  # fmt: skip
    for name in others:
        consuming(name, False)
    with (
        httpx.Client(base_url=base_url, timeout=120) as http,
        second_worker(redis_url, logs / "profiled.log", "benchmarks.profile_worker", **env) as (_, pid),
    ):
        session = Session(http, redis.Redis.from_url(redis_url), job, StackCpu(app, pid))
        session.batch(warm)
        run = session.batch(items)
    print(f"\n{job.label}: {run.rate:.2f} items/s under cProfile, items per worker {run.per_worker}")
    for process in ("pool", "main"):
        print_profile(logs / f"profile.{process}", process, warm + items, clock)


# What the profile tables list besides the top ones: the project's code and Celery's per-task work.
WATCHED = ("tasks/", "pipelines/", "store_result", "update_state", "send_event", "basic_ack", "on_task_received",
           "_brpop_read", "apply_async", "onnxruntime_pybind11_state.run")  # fmt: skip


def print_profile(path: Path, process: str, tasks: int, clock: str, top: int = 25) -> None:
    import pstats

    stats: dict[Any, Any] = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    ranked = sorted(stats.items(), key=lambda entry: entry[1][3], reverse=True)
    for title, entries in (
        (f"the {top} with the most cumulative time", ranked[:top]),
        ("Atelier's own and Celery's per-task work", [e for e in ranked[top:] if any(w in str(e[0]) for w in WATCHED)]),
    ):
        print(f"\n### cProfile ({clock} clock) of the worker's {process} process, {tasks} tasks: {title}\n")
        print("| ms per task, cumulative | own | calls per task | function |\n|---:|---:|---:|---|")
        for (file, line, function), (_, calls, own, cumulative, _) in entries:
            if cumulative * 1000 / tasks < 0.05:
                continue
            where = file.replace(str(ROOT) + "/", "").split("site-packages/")[-1]
            print(f"| {cumulative * 1000 / tasks:.2f} | {own * 1000 / tasks:.2f} | {calls / tasks:.1f} | "
                  f"{where}:{line} {function} |")  # fmt: skip


if __name__ == "__main__":
    main()
