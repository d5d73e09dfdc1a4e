"""``python app.py`` — what ``make run`` starts — from the outside: a real stack of processes."""

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
from PIL import Image

from app import Child, Supervisor, free_port, restart_delay
from tests.conftest import b64
from tests.support.stack import start_app, wait_until

ROOT = Path(__file__).resolve().parent.parent


def children(process: psutil.Process, needle: str) -> list[psutil.Process]:
    return [child for child in process.children() if needle in " ".join(child.cmdline())]


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, artifacts: Path
) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client, Path]]:
    """``python app.py`` with its own redis-server, workers and Flower: the tests using it are slow."""
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    data_dir = tmp_path_factory.mktemp("app-data")
    env["ATELIER_DATA_DIR"] = str(data_dir)
    flower_port = free_port()
    log = artifacts / "app.log"
    log.write_bytes(b"")
    process, http = start_app(env, log, "--flower", "--flower-port", str(flower_port))
    try:
        yield process, http, data_dir
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()


def run_job(http: httpx.Client, body: dict[str, Any]) -> tuple[list[dict[str, Any]], bytes]:
    response = http.post("/api/v1/tasks/submit/", json=body)
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    seen: list[dict[str, Any]] = []

    def done() -> bool:  # long polls: each answer is the next state the job reached
        seen.append(http.get(f"/api/v1/tasks/{task_id}/status/?wait=10").json())
        return seen[-1]["status"] in ("SUCCESS", "FAILURE", "REVOKED")

    wait_until(done, 60, interval=0, what=f"job {task_id}")
    assert seen[-1]["status"] == "SUCCESS", seen[-1]
    png = http.get(f"/api/v1/tasks/{task_id}/result/?format=png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    return seen, png.content


@pytest.mark.slow
def test_make_run_serves_the_studio(stack: Any, photo: Image.Image, mask: Image.Image) -> None:
    _process, http, _ = stack
    page = http.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert http.get("/docs").status_code == 200
    # Beside the page (mounted at /), the API still answers in its own shape.
    assert http.get("/api/v1/tasks/submit/").status_code == 405
    assert http.get("/api/v1/nothing/").json()["error"] == "Not found"
    assert http.head("/healthz").status_code == 200

    seen, png = run_job(http, {"task_type": "object_removal", "image": b64(photo, "JPEG"), "mask": b64(mask)})
    # A job that ends within 50 ms publishes no PROCESSING state, so only the order is certain.
    order = {"PENDING": 0, "PROCESSING": 1, "SUCCESS": 2}
    assert [order[status["status"]] for status in seen] == sorted(order[status["status"]] for status in seen)
    seen, styled = run_job(
        http, {"task_type": "style_transfer", "image": b64(photo), "parameters": {"style": "starry-night"}}
    )
    assert {"Loading the style network", "Applying style"} & {status["message"] for status in seen}
    assert png != styled


@pytest.mark.slow
def test_flower_shows_the_workers(stack: Any) -> None:
    process, _, _ = stack
    (flower,) = children(psutil.Process(process.pid), " flower")
    port = next(arg.split("=")[1] for arg in flower.cmdline() if arg.startswith("--port="))

    def workers() -> set[str]:
        try:
            return set(httpx.get(f"http://127.0.0.1:{port}/api/workers?refresh=1", timeout=10).json())
        except (httpx.HTTPError, ValueError):
            return set()

    names = wait_until(lambda: len(workers()) == 2 and workers(), 30, interval=0.5, what="Flower")
    assert {name.split("-")[0] for name in names} == {"gpu", "cpu"}


@pytest.mark.slow
def test_embedded_redis_is_loopback_only_and_persistent(stack: Any) -> None:
    process, _, data_dir = stack
    (redis_server,) = children(psutil.Process(process.pid), "redis-server")
    assert any(path.name.startswith("appendonly") for path in data_dir.iterdir())
    listening = {conn.laddr.ip for conn in redis_server.net_connections(kind="tcp") if conn.status == "LISTEN"}
    assert listening == {"127.0.0.1"}


@pytest.mark.slow
def test_a_dead_worker_is_restarted(stack: Any, photo: Image.Image, mask: Image.Image) -> None:
    process, http, _ = stack
    parent = psutil.Process(process.pid)
    (worker,) = children(parent, "-Q cpu")
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    replacement = wait_until(lambda: [w for w in children(parent, "-Q cpu") if w.pid != worker.pid], 20, what="restart")
    assert replacement
    run_job(
        http,
        {"task_type": "object_removal", "image": b64(photo.resize((120, 80))), "mask": b64(mask.resize((120, 80)))},
    )


@pytest.mark.slow
def test_a_second_stack_on_the_same_data_folder_is_refused(stack: Any) -> None:
    _, _, data_dir = stack
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env["ATELIER_DATA_DIR"] = str(data_dir)
    result = subprocess.run(
        [sys.executable, "app.py", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Another Atelier is already running" in result.stderr


def test_share_without_internet_fails_fast_and_clearly(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gradio's tunnel is replaced by one failing as it does offline (this machine may or may
    not have internet), then by one that never answers."""
    from gradio import networking

    from app import open_share_link

    def offline(*args: Any) -> str:
        raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(networking, "setup_tunnel", offline)
    with caplog.at_level("ERROR", logger="atelier"):
        assert open_share_link(free_port(), timeout=20) is None
    assert "Could not create a share link: it needs internet access" in caplog.text
    assert "name resolution" in caplog.text and "keeps serving locally" in caplog.text

    caplog.clear()
    monkeypatch.setattr(networking, "setup_tunnel", lambda *args: time.sleep(30))
    started = time.monotonic()
    with caplog.at_level("ERROR", logger="atelier"):
        assert open_share_link(free_port(), timeout=1) is None
    assert time.monotonic() - started < 10
    assert "no answer within 1 s" in caplog.text


@pytest.mark.slow
def test_ctrl_c_stops_every_child(stack: Any) -> None:
    process, _, _ = stack
    parent = psutil.Process(process.pid)
    kids = parent.children(recursive=True)
    assert len(kids) >= 4  # redis-server, two workers (with their pool processes), flower
    process.send_signal(signal.SIGINT)
    assert process.wait(45) == 0
    _gone, alive = psutil.wait_procs(kids, timeout=10)
    assert not alive, [p.cmdline() for p in alive]


def test_no_workers_needs_a_redis_url() -> None:
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    result = subprocess.run(
        [sys.executable, "app.py", "--no-workers"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "set REDIS_URL" in result.stderr


@pytest.mark.parametrize("port", ["99999", "0", "-1", "http"])
def test_a_port_out_of_range_is_refused(port: str) -> None:
    result = subprocess.run(
        [sys.executable, "app.py", "--port", port], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "is not a port number (1-65535)" in result.stderr


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"ATELIER_JOB_TIME_LIMIT": "5000", "ATELIER_VISIBILITY_TIMEOUT": "100"}, "must be longer than"),
        ({"ATELIER_QUEUES": '{"bogus": "cpu"}'}, "ATELIER_QUEUES names bogus; task types: image_generation"),
        ({"ATELIER_RATE_LIMIT": "5/0s"}, "window must be at least one s"),
        ({"ATELIER_RATE_LIMIT": "lots"}, "must look like 120/minute"),
    ],
)
def test_invalid_settings_are_refused_at_start(variables: dict[str, str], message: str) -> None:
    env = {**os.environ, **variables}
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_child_dying_young_backs_off_1_2_4_up_to_30_seconds() -> None:
    restarts, delays = 0, []
    for _ in range(8):
        delay, restarts = restart_delay(restarts, lived=2.0)
        delays.append(delay)
        restarts += 1  # what the supervisor does when it starts the child again
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_child_that_lived_over_a_minute_starts_its_back_off_again() -> None:
    assert restart_delay(7, lived=61.0) == (1.0, 0)
    assert restart_delay(7, lived=60.0) == (30.0, 7)  # a minute exactly is still young
    assert restart_delay(3, lived=59.0) == (8.0, 3)


def test_the_supervisor_restarts_a_dead_child_with_its_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_watch`` asks ``restart_delay`` with the child's restarts and lifetime, and keeps the count."""
    import app

    asked: list[tuple[int, float]] = []

    def no_wait(restarts: int, lived: float) -> tuple[float, int]:
        asked.append((restarts, lived))
        return 0.0, restart_delay(restarts, lived)[1]

    monkeypatch.setattr(app, "restart_delay", no_wait)
    supervisor = Supervisor(dict(os.environ))
    child = supervisor.add(Child("dies", [sys.executable, "-c", "raise SystemExit(3)"]))
    supervisor.watch()
    try:
        wait_until(lambda: len(asked) >= 2, 20, what="the child to die twice")
    finally:
        supervisor.stop()
        supervisor.thread.join(5)
    assert [restarts for restarts, _ in asked[:2]] == [0, 1] and child.restarts >= 1
    assert all(0 <= lived < 60 for _, lived in asked)
    assert not supervisor.thread.is_alive()


def test_download_models_fetches_the_named_ones_with_progress_and_a_summary(tmp_path: Path) -> None:
    """From a loopback mirror: one downloaded (a progress bar), one missing there (its whole message)."""
    import hashlib

    from tests.support.mirror import serving_mirror

    payload = b"weights" * 20_000
    env = {key: value for key, value in os.environ.items() if key != "U2NET_HOME"}
    with serving_mirror() as mirror:
        mirror.put("rembg/u2netp.onnx", payload, pieces=3, delay=0.1)
        mirror.put("rembg/u2netp.onnx.sha256", hashlib.sha256(payload).hexdigest().encode())
        env |= {"ATELIER_MODELS_DIR": str(tmp_path), "ATELIER_MODEL_MIRROR": mirror.url}
        result = subprocess.run(
            [sys.executable, "app.py", "download-models", "u2netp", "big-lama"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[2:] == [
        "u2netp — 4.6 MB, Apache-2.0",
        f"  {tmp_path / 'rembg' / 'models' / 'u2netp' / 'u2netp.onnx'} (0.14 MB)",
        "big-lama — 206 MB, Apache-2.0",
        f"  failed: Could not download big-lama.pt from {mirror.url}/lama/big-lama.pt: HTTP 404 Not Found",
        "Summary: 1 downloaded (0.14 MB), 0 already there, 1 failed.",
    ]
    assert "u2netp.onnx: 100%" in result.stderr and "Downloading data from" not in result.stdout + result.stderr
