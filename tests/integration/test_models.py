"""Models over REST, with real workers: reports per worker, downloads on first use with progress,
one download for concurrent jobs, a cancelled download, downloads asked of a queue.

Two cpu workers share a fresh models folder (one machine's disk) and fetch from a loopback mirror
serving the tiny rembg model; the session's cpu worker, whose folder has u2net, stops consuming
the cpu queue meanwhile (as in test_engines_lama.py), so jobs land on the two new ones.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from jobs import FINISHED
from tasks.models import request_key
from tests.conftest import b64
from tests.integration.conftest import Api
from tests.integration.test_engines_lama import set_consuming
from tests.support.mirror import Mirror, serving_mirror
from tests.support.stack import Worker, wait_until
from tests.support.tiny_onnx import build_background_model

DOWNLOADING = re.compile(r"^Downloading u2net\.onnx — [\d.]+ of [\d.]+ MB$")
PAIR = ("models-a@test", "models-b@test")


@pytest.fixture(scope="module")
def pair(
    workers: dict[str, Worker],
    redis_client: Any,
    engines: Path,
    tmp_path_factory: pytest.TempPathFactory,
    artifacts: Path,
) -> Iterator[tuple[Mirror, Path]]:
    """The mirror, and the models folder of the two cpu workers (nothing in it at first)."""
    models = tmp_path_factory.mktemp("pair-models")
    tiny = build_background_model(tmp_path_factory.mktemp("served") / "tiny.onnx").read_bytes()
    with serving_mirror() as mirror:
        for name in ("u2net", "silueta", "u2netp"):
            mirror.put(f"rembg/{name}.onnx", tiny)
            mirror.put(f"rembg/{name}.onnx.sha256", hashlib.sha256(tiny).hexdigest().encode())  # not rembg's file
        env = {
            "ATELIER_MODELS_DIR": str(models),
            "U2NET_HOME": str(models / "rembg"),
            "ATELIER_MODEL_MIRROR": mirror.url,
        }
        set_consuming(workers["cpu"], False)
        started = [Worker("cpu", name.split("@")[0], env=env, log=artifacts / f"worker-{name}.log") for name in PAIR]
        try:
            for worker in started:
                worker.wait_ready(redis_client)
            yield mirror, models
        finally:
            for worker in started:  # both stop at once
                worker.process.terminate()
            for worker in started:
                worker.stop()
            set_consuming(workers["cpu"], True)
            redis_client.delete(request_key("cpu"))


def models(api: Api) -> dict[str, Any]:
    response = api.http.get("/api/v1/models/")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def row(report: dict[str, Any], model: str, operation: str = "background_removal") -> dict[str, Any]:
    return next(item for item in report["models"] if item["model"] == model and item["operation"] == operation)


def test_workers_with_different_models_are_reported_apart(api: Api, pair: tuple[Mirror, Path]) -> None:
    def told_apart() -> dict[str, Any] | None:
        u2net = row(models(api), "u2net")
        mine = set(PAIR) <= set(u2net["missing_on"])
        return u2net if mine and "session-cpu@test" in u2net["ready_on"] else None

    u2net = wait_until(told_apart, 15, interval=0.3, what="the reports of three cpu workers")
    assert (u2net["license"], u2net["download"], u2net["queue"], u2net["default"]) == (
        "Apache-2.0",
        "auto",
        "cpu",
        True,
    )
    report = models(api)
    birefnet = row(report, "birefnet-general")
    assert (birefnet["size_bytes"], birefnet["license"], birefnet["ready_on"]) == (973_000_000, "MIT", [])
    assert set(PAIR) <= set(birefnet["missing_on"])
    pack = row(report, "buffalo_l", "face_swap")
    assert "session-gpu@test" in pack["ready_on"] and not set(PAIR) & set(pack["ready_on"] + pack["missing_on"])
    workers = {worker["worker"]: worker for worker in report["workers"]}
    assert workers["models-a@test"]["device"] == "cpu" and workers["models-a@test"]["queues"] == ["cpu"]


def follow_both(api: Api, task_ids: list[str], timeout: float = 30) -> list[list[dict[str, Any]]]:
    """Every distinct status of each job until both end."""
    seen: list[list[dict[str, Any]]] = [[] for _ in task_ids]
    deadline = time.monotonic() + timeout
    while not all(trace and trace[-1]["status"] in FINISHED for trace in seen):
        assert time.monotonic() < deadline, f"jobs did not finish: {[trace[-1:] for trace in seen]}"
        for task_id, trace in zip(task_ids, seen, strict=True):
            status = api.status(task_id)
            if not trace or status != trace[-1]:
                trace.append(status)
        time.sleep(0.02)
    return seen


def test_two_first_jobs_download_once_with_progress(api: Api, pair: tuple[Mirror, Path], photo: Image.Image) -> None:
    mirror, folder = pair
    mirror.put("rembg/u2net.onnx", mirror.files["rembg/u2net.onnx"].data, pieces=8, delay=0.25)
    body = {"task_type": "background_removal", "image": b64(photo.resize((120, 80)))}
    traces = follow_both(api, [api.submit(body), api.submit(body)])
    assert [trace[-1]["status"] for trace in traces] == ["SUCCESS", "SUCCESS"], [trace[-1] for trace in traces]
    assert mirror.requests["rembg/u2net.onnx"] == 1
    downloading = [status for trace in traces for status in trace if DOWNLOADING.match(status["message"])]
    assert len({status["progress"] for status in downloading}) >= 3, downloading  # the percentage moves
    messages = {status["message"] for trace in traces for status in trace}
    assert "Waiting for u2net.onnx: another job is downloading it" in messages
    assert (folder / "rembg" / "models" / "u2net" / "u2net.onnx").is_file()

    def both_ready_and_loaded() -> bool:
        u2net = row(models(api), "u2net")
        return set(PAIR) <= set(u2net["ready_on"]) and set(PAIR) <= set(u2net["loaded_on"])

    wait_until(both_ready_and_loaded, 10, interval=0.3, what="u2net ready and loaded on both workers")


def test_a_cancelled_download_stops(api: Api, pair: tuple[Mirror, Path], photo: Image.Image) -> None:
    mirror, folder = pair
    mirror.put("rembg/silueta.onnx", mirror.files["rembg/silueta.onnx"].data, pieces=20, delay=0.5)
    task_id = api.submit(
        {"task_type": "background_removal", "image": b64(photo.resize((120, 80))), "parameters": {"model": "silueta"}}
    )
    wait_until(lambda: api.status(task_id)["message"].startswith("Downloading silueta.onnx"), 15, what="the download")
    assert api.cancel(task_id).status_code == 200
    part = folder / "rembg" / "models" / "silueta" / "silueta.onnx.part"
    time.sleep(1.2)  # the worker stops at its next chunk (one every 0.5 s)
    kept = part.stat().st_size
    time.sleep(1.0)
    assert part.stat().st_size == kept < len(mirror.files["rembg/silueta.onnx"].data)  # nothing more came
    assert not part.with_name("silueta.onnx").exists() and api.status(task_id)["status"] == "REVOKED"


def test_a_download_asked_of_a_queue_reaches_each_of_its_workers(api: Api, pair: tuple[Mirror, Path]) -> None:
    mirror, _ = pair
    for wrong, field in (({"queue": "tpu"}, "queue"), ({"queue": "cpu", "models": ["nope"]}, "models")):
        response = api.http.post("/api/v1/models/download/", json=wrong)
        assert response.status_code == 400 and field in response.json()["details"], response.text
    response = api.http.post("/api/v1/models/download/", json={"queue": "cpu", "models": ["u2netp"]})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["models"] == ["u2netp"] and set(PAIR) <= set(accepted["workers"])

    def both_done() -> dict[str, Any] | None:
        report = models(api)
        states = {
            worker["worker"]: (worker["download"] or {}).get("state")
            for worker in report["workers"]
            if (worker["download"] or {}).get("request_id") == accepted["request_id"]
        }
        done = all(states.get(name) == "done" for name in PAIR)
        return report if done and set(PAIR) <= set(row(report, "u2netp")["ready_on"]) else None

    wait_until(both_done, 15, interval=0.3, what="both workers to fetch u2netp")
    assert mirror.requests["rembg/u2netp.onnx"] == 1  # one disk: the second worker found it there
