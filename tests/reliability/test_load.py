"""Load: 1,000 jobs from 50 concurrent clients, REST and gradio_client mixed, against ``python app.py``
(what ``make run`` starts: embedded Redis, one worker per queue, real engines). All succeed, none is
lost, none runs twice, and Redis is back to its baseline once the (short) result TTL has passed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from PIL import Image, ImageDraw

from app import free_port
from tasks.states import FINISHED
from tasks.store import job_key
from tests.conftest import b64
from tests.support.stack import stable_keys, wait_until

ROOT = Path(__file__).resolve().parents[2]
JOBS, CLIENTS, GRADIO_CLIENTS = 1000, 50, 10
TTL = 25  # at 5 s, ~3% expired unrun: 25 clients per worker make the queue wait longer than that
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[tuple[str, redis.Redis, Path]]:
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env["ATELIER_DATA_DIR"] = str(tmp_path_factory.mktemp("load-data"))
    env["ATELIER_RESULT_TTL"] = str(TTL)
    port = free_port()
    log_path = artifacts / "app-load.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, "app.py exited; see test-artifacts/app-load.log"
        try:
            queues = httpx.get(f"{base}/healthz", timeout=5).json()["queues"]
        except (httpx.HTTPError, KeyError, ValueError):
            return False
        return bool(queues["gpu"]["workers"] and queues["cpu"]["workers"])

    try:
        wait_until(ready, 90, interval=0.3, what="app.py's stack")
        url = re.search(rb"embedded Redis at (redis://\S+)", log_path.read_bytes())
        assert url, "app.py did not log its Redis URL"
        yield base, redis.Redis.from_url(url[1].decode()), log_path
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(40)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def images(folder: Path) -> dict[str, Any]:
    photo = Image.new("RGB", (16, 16), (30, 140, 90))
    ImageDraw.Draw(photo).line((0, 0, 15, 15), fill=(250, 250, 250))
    mask = Image.new("L", (16, 16), 0)
    ImageDraw.Draw(mask).rectangle((6, 6, 9, 9), fill=255)
    styled = Image.new("RGB", (32, 32), (120, 60, 200))
    for name, image in (("photo", photo), ("mask", mask), ("styled", styled)):
        image.save(folder / f"{name}.png")
    return {
        "object_removal": {
            "task_type": "object_removal",
            "image": b64(photo),
            "mask": b64(mask),
            "parameters": {"engine": "telea"},
        },
        "style_transfer": {"task_type": "style_transfer", "image": b64(styled), "parameters": {"style": "mosaic"}},
    }


MEMORY = ("used_memory", "used_memory_dataset", "used_memory_peak", "mem_clients_normal")


def snapshot(db: redis.Redis) -> tuple[set[bytes], dict[str, int]]:
    keys = stable_keys(db)
    info = db.info("memory")
    return keys, {name: int(info.get(name, 0)) for name in MEMORY} | {
        "clients": int(db.info("clients")["connected_clients"])
    }


class Load:
    """JOBS jobs, object removal and style transfer in turns, taken by REST and gradio_client clients
    from one counter; ``outcomes`` holds what each job's client saw, by task id."""

    def __init__(self, base: str, db: redis.Redis, folder: Path) -> None:
        from gradio_client import handle_file

        self.base, self.db, self.bodies = base, db, images(folder)
        editor = {"background": handle_file(str(folder / "photo.png")), "layers": [], "composite": None}
        self.gradio_inputs = {
            "object_removal": [editor, handle_file(str(folder / "mask.png")), "telea", 0],
            "style_transfer": [handle_file(str(folder / "styled.png")), "mosaic", None, 0.8, "fast", False],
        }
        self.lock = threading.Lock()
        self.next_job = iter(range(JOBS))
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []

    def warm_up(self) -> None:
        """One job of each kind (models load once per worker), then until its keys have expired."""
        with httpx.Client(base_url=self.base, timeout=30) as http:
            for body in self.bodies.values():
                task_id = http.post("/api/v1/tasks/submit/", json=body).json()["task_id"]
                wait_until(lambda t=task_id: http.get(f"/api/v1/tasks/{t}/status/").json()["status"] == "SUCCESS", 60)
        wait_until(lambda: not list(self.db.scan_iter(job_key("*"))), TTL + 30, interval=0.5, what="warm-up expiry")
        time.sleep(1)

    def take(self) -> tuple[int, str] | None:
        with self.lock:
            n = next(self.next_job, None)
        return None if n is None else (n, ("object_removal", "style_transfer")[n % 2])

    def rest_client(self) -> None:
        with httpx.Client(base_url=self.base, timeout=60) as http:
            while (job := self.take()) is not None:
                try:
                    self.rest_job(http, job[1])
                except Exception as exc:
                    self.errors.append(f"rest job {job[0]}: {exc!r}")

    def rest_job(self, http: httpx.Client, task_type: str) -> None:
        response = http.post("/api/v1/tasks/submit/", json=self.bodies[task_type])
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        while (status := http.get(f"/api/v1/tasks/{task_id}/status/").json())["status"] not in FINISHED:
            time.sleep(0.02)
        png = http.get(f"/api/v1/tasks/{task_id}/result/?format=png")
        self.outcomes[task_id] = {
            "via": "rest", "status": status["status"], "attempts": self.attempts(task_id),
            "png": png.status_code == 200 and png.content.startswith(b"\x89PNG"),
        }  # fmt: skip

    def gradio_client(self) -> None:
        from gradio_client import Client

        client = Client(self.base, verbose=False)
        while (job := self.take()) is not None:
            try:
                image, task_id, message = client.predict(*self.gradio_inputs[job[1]], api_name=f"/{job[1]}")
                self.outcomes[task_id] = {
                    "via": "gradio", "status": "SUCCESS" if message == "Done" else message,
                    "attempts": self.attempts(task_id),
                    "png": bool(image) and Image.open(image).size in ((16, 16), (32, 32)),
                }  # fmt: skip
            except Exception as exc:
                self.errors.append(f"gradio job {job[0]}: {exc!r}")

    def attempts(self, task_id: str) -> bytes | None:
        return self.db.hget(job_key(task_id), "attempts")  # type: ignore[return-value]

    def run(self) -> float:
        started = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(self.gradio_client) for _ in range(GRADIO_CLIENTS)]
            futures += [pool.submit(self.rest_client) for _ in range(CLIENTS - GRADIO_CLIENTS)]
            for future in futures:
                future.result()
        return time.monotonic() - started


def log_counts(log_path: Path) -> tuple[Counter[str], Counter[str]]:
    """How many times the workers' log says each job was received, and succeeded."""
    text = log_path.read_text(errors="replace")
    received = Counter(re.findall(rf"run_operation\[({UUID})\] received", text))
    return received, Counter(re.findall(rf"run_operation\[({UUID})\] succeeded", text))


def test_a_thousand_jobs_from_fifty_clients(studio: tuple[str, redis.Redis, Path], tmp_path: Path) -> None:
    base, db, log_path = studio
    load = Load(base, db, tmp_path)
    load.warm_up()
    baseline_keys, baseline_memory = snapshot(db)

    duration = load.run()
    outcomes, ids = load.outcomes, set(load.outcomes)
    # A worker logs "succeeded" after it stored the result a client may already have seen.
    wait_until(lambda: ids <= set(log_counts(log_path)[1]), 15, interval=0.5, what="every job's log line")
    received, succeeded = log_counts(log_path)
    print(
        f"\n{JOBS} jobs, {CLIENTS} clients ({GRADIO_CLIENTS} gradio_client): {duration:.1f} s, "
        f"{JOBS / duration:.1f} jobs/s; via {Counter(o['via'] for o in outcomes.values())}"
    )
    assert load.errors == [], load.errors[:5]
    assert len(ids) == JOBS  # every job got its own id and an answer
    assert Counter(o["status"] for o in outcomes.values()) == {"SUCCESS": JOBS}  # none lost or failed
    assert all(o["png"] for o in outcomes.values())
    assert Counter(o["attempts"] for o in outcomes.values()) == {b"1": JOBS}  # each started once
    assert all(received[t] == 1 and succeeded[t] == 1 for t in ids)  # each delivered and run once

    wait_until(lambda: snapshot(db)[0] == baseline_keys, TTL + 60, interval=0.5, what="Redis to drop every job's keys")
    time.sleep(1)
    keys, memory = snapshot(db)
    print(f"Redis memory: baseline {baseline_memory}, after expiry {memory}")
    assert keys == baseline_keys
    # The data is back to its baseline; what stays is the web process's larger connection pools
    # (one connection per client thread that was busy at once), counted in mem_clients_normal.
    assert memory["used_memory_dataset"] < baseline_memory["used_memory_dataset"] + 512 * 1024
