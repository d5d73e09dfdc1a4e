"""Atelier's benchmark: what the job system adds around the model, measured side by side in one run.

    .venv/bin/python benchmarks/run.py [--n 200]        (or: make bench)

Starts the stack that `make run` starts (embedded Redis, a gpu and a cpu worker, the web app)
on a free port with a throw-away data folder, then prints one table per section. Compare
ratios within one run: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PHOTO = ROOT / "assets" / "examples" / "coffee.jpg"
FINISHED = ("SUCCESS", "FAILURE", "REVOKED")


# -- the stack -------------------------------------------------------------------------------------
@contextmanager
def stack() -> Iterator[tuple[str, str, psutil.Process]]:
    """`python app.py` on a free port; yields (base URL, Redis URL, the app process)."""
    from app import free_port

    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
        env["ATELIER_DATA_DIR"] = data
        log = Path(data) / "app.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    queues = httpx.get(f"{base_url}/healthz").json()["queues"]
                    if queues["cpu"]["workers"] and queues["gpu"]["workers"]:
                        break
                except (httpx.HTTPError, KeyError, ValueError):
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"the stack did not start; see {log}")
                time.sleep(0.3)
            redis_url = re.search(r"embedded Redis at (redis://\S+)", log.read_text()).group(1)  # type: ignore[union-attr]
            yield base_url, redis_url, psutil.Process(process.pid)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)


# -- inputs ----------------------------------------------------------------------------------------
def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def small_job() -> tuple[bytes, bytes]:
    image = Image.new("RGB", (64, 64), (40, 160, 90))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((24, 24, 40, 40), fill=255)
    return encode(image), encode(mask)


def photo_job(width: int, height: int) -> tuple[bytes, bytes]:
    """The sample photo at that size, as a JPEG upload, with a small round mask (a spot to remove)."""
    photo = Image.open(PHOTO).convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    mask = Image.new("L", (width, height), 0)
    radius = max(8, min(width, height) // 20)
    ImageDraw.Draw(mask).ellipse(
        (width // 2 - radius, height // 2 - radius, width // 2 + radius, height // 2 + radius), fill=255
    )
    return encode(photo, "JPEG"), encode(mask)


def body(image: bytes, mask: bytes) -> dict[str, Any]:
    return {
        "task_type": "object_removal",
        "image": base64.b64encode(image).decode(),
        "mask": base64.b64encode(mask).decode(),
        "parameters": {"engine": "telea"},
    }


# -- paths -----------------------------------------------------------------------------------------
def rest_job(http: httpx.Client, payload: dict[str, Any], poll: float = 0.005) -> str:
    """Submit, then poll ``/status/`` every ``poll`` seconds; with ``poll=0``, long-poll with ``?wait=``."""
    task_id: str = http.post("/api/v1/tasks/submit/", json=payload).json()["task_id"]
    url = f"/api/v1/tasks/{task_id}/status/" + ("" if poll else "?wait=10")
    while (status := http.get(url).json()["status"]) not in FINISHED:
        time.sleep(poll)
    assert status == "SUCCESS", status
    return task_id


def rest_waited(http: httpx.Client, payload: dict[str, Any]) -> str:
    """One request: submit with ``Prefer: wait=10``, answered with the final status."""
    answer = http.post("/api/v1/tasks/submit/", json=payload, headers={"Prefer": "wait=10"})
    status = answer.json()
    assert answer.status_code == 200 and status["status"] == "SUCCESS", answer.text
    return str(status["task_id"])


class AteliersTask:
    """Atelier's own Celery task without the HTTP layer: record + images written, send_task, .get()."""

    def __init__(self, redis_url: str) -> None:
        from settings import Settings
        from tasks.celery_app import make_celery
        from tasks.store import JobStore, connect

        settings = Settings(redis_url=redis_url)
        self.app = make_celery(settings)
        self.store = JobStore(connect(redis_url), settings.result_ttl)

    def job(self, image: bytes, mask: bytes) -> None:
        from tasks.celery_app import TASK_NAME

        job_id = str(uuid.uuid4())
        self.store.create(job_id, "object_removal", "cpu", {"image": image, "mask": mask}, {})
        kwargs = {"task_type": "object_removal", "parameters": {"engine": "telea"}, "prompt": None}
        self.app.send_task(TASK_NAME, kwargs=kwargs, task_id=job_id, queue="cpu").get(timeout=60)


class RawCelery:
    """The baseline: a plain Celery task (benchmarks/raw_celery.py) with the images in its message,
    on a prefork worker of its own, ``.delay().get()`` — none of Atelier's code on the way."""

    def __init__(self) -> None:
        from raw_celery import inpaint

        self.task = inpaint

    def job(self, image: bytes, mask: bytes) -> None:
        png = self.task.delay(base64.b64encode(image).decode(), base64.b64encode(mask).decode()).get(timeout=60)
        assert png, "the raw task returned nothing"


@contextmanager
def raw_worker(redis_url: str) -> Iterator[None]:
    """A Celery worker for benchmarks/raw_celery.py on the stack's Redis (queue ``raw``), like Atelier's:
    prefork, one process."""
    os.environ["RAW_CELERY_REDIS"] = redis_url  # before raw_celery is imported, here and in the worker
    env = dict(os.environ)
    argv = [sys.executable, "-m", "celery", "-A", "raw_celery", "worker", "-Q", "raw", "-c", "1",
            "--pool", "prefork", "--without-mingle", "--loglevel", "WARNING",
            "-n", f"raw-{os.getpid()}@%h"]  # fmt: skip
    process = subprocess.Popen(argv, cwd=ROOT / "benchmarks", env=env)
    try:
        from raw_celery import app

        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("the raw Celery worker did not start")
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def interleaved(paths: dict[str, Callable[[], Any]], n: int) -> dict[str, list[float]]:
    """``n`` timings of each path, taken in turns (a, b, c, a, b, c...): a noisy moment costs every path alike."""
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(n):
        for name, function in paths.items():
            started = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - started)
    return samples


def timed(function: Callable[[], Any], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return samples


def stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(f"{cell:.2f}" if isinstance(cell, float) else str(cell) for cell in row) + " |")


# -- sections --------------------------------------------------------------------------------------
def round_trip(base_url: str, redis_url: str, n: int) -> None:
    from gradio_client import Client, handle_file

    from pipelines.base import JobInput, no_progress
    from pipelines.images import open_image
    from pipelines.object_removal import ObjectRemovalParameters, remove_object
    from settings import Settings

    image, mask = small_job()
    decoded = {"image": open_image(image, 10**8), "mask": open_image(mask, 10**8)}
    job = JobInput(decoded, ObjectRemovalParameters(engine="telea"), settings=Settings(redis_url=redis_url))
    raw, ours = RawCelery(), AteliersTask(redis_url)
    payload = body(image, mask)
    with tempfile.TemporaryDirectory() as tmp, httpx.Client(base_url=base_url, timeout=60) as http:
        (Path(tmp) / "image.png").write_bytes(image)
        (Path(tmp) / "mask.png").write_bytes(mask)
        gradio = Client(base_url, verbose=False)
        editor = {"background": handle_file(f"{tmp}/image.png"), "layers": [], "composite": None}
        gradio_inputs = (editor, handle_file(f"{tmp}/mask.png"), "telea", 0)
        paths = {
            "direct pipeline call": lambda: remove_object(job, no_progress),
            "raw Celery .delay().get() (baseline)": lambda: raw.job(image, mask),
            "Atelier's task without HTTP": lambda: ours.job(image, mask),
            "REST submit → SUCCESS (poll 5 ms)": lambda: rest_job(http, payload),
            "REST submit → SUCCESS (status?wait=10)": lambda: rest_job(http, payload, poll=0),
            "REST submit with Prefer: wait=10": lambda: rest_waited(http, payload),
            "gradio_client predict": lambda: gradio.predict(*gradio_inputs, api_name="/object_removal"),
        }
        interleaved(paths, 5)  # warm-up: pool processes, connections, caches
        rows = interleaved(paths, n)
    floor = statistics.median(rows["direct pipeline call"])
    celery = statistics.median(rows["raw Celery .delay().get() (baseline)"])
    table(
        f"1. Round trip of a small job (object_removal/telea, 64×64, {n} each, one at a time, interleaved)",
        ["path", "median ms", "p99 ms", "× direct", "× raw Celery"],
        [[name, *stats(s), statistics.median(s) / floor, statistics.median(s) / celery] for name, s in rows.items()],
    )


def throughput(base_url: str, redis_url: str, n: int) -> None:
    image, mask = small_job()
    payload = body(image, mask)
    rows = []
    for clients in (1, 8, 32):
        jobs = max(n, clients * 4)

        def rest_client(count: int, one_request: bool = False) -> None:
            with httpx.Client(base_url=base_url, timeout=120) as http:
                for _ in range(count):
                    rest_waited(http, payload) if one_request else rest_job(http, payload, poll=0)

        def raw_client(count: int) -> None:
            raw = RawCelery()
            for _ in range(count):
                raw.job(image, mask)

        paths: dict[str, Callable[[int], None]] = {
            "rest": rest_client,
            "prefer": lambda count: rest_client(count, one_request=True),
            "raw": raw_client,
        }
        rates: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(2):  # in turns, twice: REST, Prefer, raw, REST, Prefer, raw
            for name, client in paths.items():
                started = time.perf_counter()
                with ThreadPoolExecutor(clients) as pool:
                    list(pool.map(client, [jobs // clients // 2] * clients))
                rates[name].append((jobs // clients // 2 * clients) / (time.perf_counter() - started))
        rest, prefer, raw = (statistics.mean(rates[name]) for name in paths)
        rows.append([clients, rest, prefer, raw, rest / raw, prefer / raw])
    header = ["concurrent clients", "REST submit + ?wait= jobs/s", "REST Prefer: wait jobs/s", "raw Celery jobs/s"]
    table(
        "2. Throughput (small jobs per second; one worker process each, the paths in turns)",
        [*header, "?wait= / raw", "Prefer / raw"],
        rows,
    )


def transport(base_url: str, redis_url: str) -> None:
    import redis

    from pipelines.base import JobInput, no_progress
    from pipelines.images import encode_png, open_image
    from pipelines.object_removal import ObjectRemovalParameters, remove_object
    from pipelines.validation import validate_submission
    from settings import Settings
    from tasks.run import load_job
    from tasks.store import JobStore, connect, input_key, job_key, output_key

    settings = Settings(redis_url=redis_url)
    store = JobStore(connect(redis_url), settings.result_ttl)
    client = redis.Redis.from_url(redis_url)
    rows = []
    for width, height in ((512, 512), (2048, 2048), (4096, 2160)):
        image, mask = photo_job(width, height)
        payload = body(image, mask)

        def median_of(function: Callable[[], Any], repeat: int = 5) -> float:
            return statistics.median(timed(function, repeat)) * 1000

        validate = median_of(lambda: validate_submission(payload, {}, settings.max_pixels))  # noqa: B023
        job_id = str(uuid.uuid4())
        write = median_of(lambda: store.create(job_id, "object_removal", "cpu", {"image": image, "mask": mask}, {}))  # noqa: B023
        record = store.record(job_id) or {}
        read = median_of(lambda: load_job(store, job_id, record, {"engine": "telea"}, None, settings))  # noqa: B023
        decoded = {"image": open_image(image, settings.max_pixels), "mask": open_image(mask, settings.max_pixels)}
        job = JobInput(decoded, ObjectRemovalParameters(engine="telea"), settings=settings)
        output = remove_object(job, no_progress).image
        encoded = median_of(lambda: encode_png(output))  # noqa: B023
        with httpx.Client(base_url=base_url, timeout=120) as http:
            totals, engine = [], []
            for _ in range(5):
                started = time.perf_counter()
                task_id = rest_job(http, payload)
                http.get(f"/api/v1/tasks/{task_id}/result/?format=png").raise_for_status()
                totals.append(time.perf_counter() - started)
                result = http.get(f"/api/v1/tasks/{task_id}/result/").json()["result"]
                engine.append(result["metadata"]["timings"]["run"])
        stored = sum(
            client.memory_usage(key) or 0
            for key in (job_key(task_id), input_key(task_id, "image"), input_key(task_id, "mask"), output_key(task_id),
                        f"celery-task-meta-{task_id}")
        )  # fmt: skip
        total, run = statistics.median(totals) * 1000, statistics.median(engine) * 1000
        rows.append(
            [f"{width}×{height}", validate, write, read, encoded, run, total, total - run, f"{stored / 1e6:.1f} MB"]
        )
    table(
        "3. Image transport (object_removal/telea, a JPEG photo and a PNG mask; ms, medians)",
        ["input", "decode+validate", "Redis write", "worker read+decode", "PNG encode", "engine", "REST submit→PNG",
         "overhead (total − engine)", "stored per job"],
        rows,
    )  # fmt: skip


def freshness(base_url: str, n: int) -> None:
    """How long after the worker publishes a progress message a polling client sees it."""
    image = encode(Image.open(PHOTO).convert("RGB").resize((1024, 683)), "JPEG")
    payload = {
        "task_type": "style_transfer",
        "image": base64.b64encode(image).decode(),
        "parameters": {"style": "mosaic"},
    }
    rows = []
    with httpx.Client(base_url=base_url, timeout=60) as http:
        for how, query, poll in (("poll every 10 ms", "", 0.01), ("status?wait=10", "?wait=10", 0.0)):
            delays = []
            for _ in range(n):
                task_id = http.post("/api/v1/tasks/submit/", json=payload).json()["task_id"]
                last = None
                while True:
                    status = http.get(f"/api/v1/tasks/{task_id}/status/{query}").json()
                    seen = time.time()
                    if status.get("updated_at") and status["message"] != last:
                        last = status["message"]
                        delays.append(seen - status["updated_at"])
                    if status["status"] in FINISHED:
                        break
                    time.sleep(poll)
            rows.append([how, len(delays), *stats(delays)])
    table(
        f"4. Progress freshness (style_transfer 1024 px, {n} jobs each, REST)",
        ["client", "samples", "median ms", "p99 ms"],
        rows,
    )


def warm_start(base_url: str, app: psutil.Process, n: int) -> None:
    image = encode(Image.open(PHOTO).convert("RGB").resize((96, 64)))
    payload = {
        "task_type": "style_transfer",
        "image": base64.b64encode(image).decode(),
        "parameters": {"style": "comic"},
    }
    with httpx.Client(base_url=base_url, timeout=60) as http:
        for _ in range(n):
            task_id = rest_job(http, payload)
        loads = http.get(f"/api/v1/tasks/{task_id}/result/").json()["result"]["metadata"]["model_loads_in_process"]
    rows = []
    for child in app.children():
        command = " ".join(child.cmdline())
        if " worker " in command:
            queue = command.split("-Q ")[1].split()[0]
            processes = [child, *child.children(recursive=True)]
            rows.append([queue, len(processes), f"{sum(p.memory_info().rss for p in processes) / 2**20:.0f} MiB"])
    table(
        f"5. Warm start: style_transfer model loads in the gpu worker's process after {n} jobs: {loads} (must be 1)",
        ["worker", "processes", "resident memory"],
        rows,
    )


SECTIONS = ("round-trip", "throughput", "transport", "freshness", "warm-start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="jobs per round-trip row")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only these tables (repeatable)")
    args = parser.parse_args()
    only = set(args.only or SECTIONS)
    print(f"Atelier benchmark — {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
          f"Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip
    with stack() as (base_url, redis_url, app):
        os.environ["REDIS_URL"] = redis_url
        if only & {"round-trip", "throughput"}:
            with raw_worker(redis_url):
                if "round-trip" in only:
                    round_trip(base_url, redis_url, args.n)
                if "throughput" in only:
                    throughput(base_url, redis_url, max(80, args.n))
        if "transport" in only:
            transport(base_url, redis_url)
        if "freshness" in only:
            freshness(base_url, max(10, args.n // 10))
        if "warm-start" in only:
            warm_start(base_url, app, 100)


if __name__ == "__main__":
    threading.current_thread().name = "benchmark"
    main()
