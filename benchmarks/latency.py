"""Submit → SUCCESS latency of a small job through the whole stack that ``make run`` starts.

    .venv/bin/python benchmarks/latency.py [--jobs 100]

Starts ``python app.py`` on a free port with a throw-away data folder, runs a weight-free
``object_removal`` on a 64×64 image N times (one at a time, polling ``/status/`` every 5 ms),
and prints a table; the direct pipeline call is the floor.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def small_job() -> tuple[Image.Image, Image.Image]:
    image = Image.new("RGB", (64, 64), (40, 160, 90))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((24, 24, 40, 40), fill=255)
    return image, mask


def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p90 * 1000, p99 * 1000


def direct(jobs: int) -> list[float]:
    from pipelines.base import JobInput, no_progress
    from pipelines.object_removal import ObjectRemovalParameters, remove_object

    image, mask = small_job()
    samples = []
    for _ in range(jobs):
        started = time.perf_counter()
        remove_object(JobInput({"image": image, "mask": mask}, ObjectRemovalParameters()), no_progress)
        samples.append(time.perf_counter() - started)
    return samples


def through_rest(base_url: str, jobs: int) -> list[float]:
    image, mask = small_job()
    body = {"task_type": "object_removal", "image": b64(image), "mask": b64(mask)}
    samples = []
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for _ in range(jobs):
            started = time.perf_counter()
            task_id = http.post("/api/v1/tasks/submit/", json=body).json()["task_id"]
            while (status := http.get(f"/api/v1/tasks/{task_id}/status/").json()["status"]) not in (
                "SUCCESS",
                "FAILURE",
            ):
                time.sleep(0.005)
            assert status == "SUCCESS", status
            samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    args = parser.parse_args()
    from app import free_port

    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
        env["ATELIER_DATA_DIR"] = data
        stack = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    queues = httpx.get(f"{base_url}/healthz").json()["queues"]
                    if queues["cpu"]["workers"]:
                        break
                except (httpx.HTTPError, KeyError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the stack did not start")
                time.sleep(0.3)
            through_rest(base_url, 5)  # warm-up: worker pool, connections
            rows = [
                ("direct pipeline call", direct(args.jobs)),
                ("REST submit → SUCCESS (polling)", through_rest(base_url, args.jobs)),
            ]
        finally:
            stack.send_signal(signal.SIGINT)
            stack.wait(60)
    floor = statistics.median(rows[0][1])
    print(f"object_removal (telea) on 64×64, {args.jobs} jobs one at a time, {os.cpu_count()} cores")
    print(f"| {'path':<34} | {'median ms':>9} | {'p90 ms':>7} | {'p99 ms':>7} | {'× direct':>8} |")
    print(f"|{'-' * 36}|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 10}|")
    for name, samples in rows:
        median, p90, p99 = percentiles(samples)
        print(f"| {name:<34} | {median:>9.2f} | {p90:>7.2f} | {p99:>7.2f} | {median / 1000 / floor:>8.1f} |")


if __name__ == "__main__":
    main()
