"""The job system end to end: REST → Redis → real Celery workers → REST."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from pipelines.object_removal import mask_array
from tasks.store import input_key, job_key, output_key, queued_key
from tests.conftest import b64, png_bytes
from tests.integration.conftest import FINISHED, Api
from tests.support.operations import executions_key
from tests.support.stack import job_ids, settle, wait_until, waiting_messages

SMALL = Image.new("RGB", (16, 16), (10, 120, 200))


def steps_job(steps: int = 10, delay: float = 0.05, marker: str | None = None, **extra: Any) -> dict[str, Any]:
    body = {"task_type": "test_steps", "image": b64(SMALL), "parameters": {"steps": steps, "delay": delay, **extra}}
    if marker:
        body["prompt"] = marker
    return body


# -- the seed's three scenarios ------------------------------------------------------------------
def test_full_flow(api: Api, photo: Image.Image, mask: Image.Image) -> None:
    """Remove an object from a real photo: 202 → PENDING/PROCESSING → SUCCESS → the PNG."""
    response = api.http.post(
        "/api/v1/tasks/submit/", json={"task_type": "object_removal", "image": b64(photo, "JPEG"), "mask": b64(mask)}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "PENDING"
    assert body["message"] == "object_removal task submitted successfully"
    task_id = body["task_id"]

    trace = api.trace(task_id)
    assert trace[-1]["status"] == "SUCCESS" and trace[-1]["progress"] == 100 and trace[-1]["result_available"]
    assert "position" not in trace[-1]  # only while queued
    assert {status["task_type"] for status in trace} == {"object_removal"}
    assert all(status["queue"] == "cpu" for status in trace)

    result = api.http.get(f"/api/v1/tasks/{task_id}/result/").json()
    assert result["task_id"] == task_id and result["status"] == "SUCCESS"
    assert result["result"]["status"] == "SUCCESS"
    assert result["result"]["metadata"]["engine"] == "telea"
    png = base64.b64decode(result["result"]["image_data"])
    out = Image.open(io.BytesIO(png))
    assert out.format == "PNG" and out.size == photo.size
    assert out.text["atelier:operation"] == "object_removal"  # provenance chunk
    original = np.asarray(Image.open(io.BytesIO(png_bytes(photo, "JPEG"))).convert("RGB"))
    outside = ~mask_array(mask)
    assert np.abs(np.asarray(out)[outside].astype(int) - original[outside]).max() == 0

    raw = api.http.get(f"/api/v1/tasks/{task_id}/result/?format=png")
    assert raw.headers["content-type"] == "image/png" and raw.content == png


def test_input_validation(api: Api, redis_client: Any) -> None:
    """Bad input: 400 naming the field, and nothing stored or enqueued."""
    settle(redis_client)
    keys, queued = job_ids(redis_client), waiting_messages(redis_client)
    cases = [
        ({"task_type": "image_generation"}, "prompt", "Prompt is required for image_generation"),
        ({"task_type": "image_generation", "prompt": "x" * 5001}, "prompt", "at most 5000"),
        ({"task_type": "paint"}, "task_type", "Unknown task_type"),
        ({"task_type": "object_removal", "image": b64(SMALL)}, "mask", "mask is required"),
        ({"task_type": "background_removal", "image": "%%%"}, "image", "not valid base64"),
        (
            {"task_type": "image_generation", "prompt": "x", "parameters": {"width": 100}},
            "parameters.width",
            "multiple of 8",
        ),
        ({"task_type": "image_generation", "prompt": "x", "parameters": "big"}, "parameters", "JSON object"),
    ]
    for body, field, words in cases:
        response = api.http.post("/api/v1/tasks/submit/", json=body)
        assert response.status_code == 400, (body, response.text)
        payload = response.json()
        assert payload["error"] == "Invalid input"
        assert any(words in message for message in payload["details"][field]), payload
    assert job_ids(redis_client) == keys
    assert waiting_messages(redis_client) == queued


def test_cancellation(api: Api, redis_client: Any) -> None:
    """A running job stops at its next step as REVOKED, and the worker takes the next job at once."""
    task_id = api.submit(steps_job(steps=400, delay=0.05, marker="cancel-running"))
    running = api.wait(task_id, ("PROCESSING",))
    assert running["message"].startswith(("Step", "Starting"))
    response = api.cancel(task_id)
    assert response.status_code == 200
    assert response.json()["status"] == "REVOKED"
    assert api.status(task_id)["status"] == "REVOKED"

    # The worker itself writes REVOKED when it stops, within a step or two (0.05 s each).
    meta_key = f"celery-task-meta-{task_id}"
    stopped = wait_until(
        lambda: (raw := redis_client.get(meta_key)) and json.loads(raw)["status"] == "REVOKED", 5, what="worker stop"
    )
    assert stopped
    started = time.monotonic()
    next_job = api.submit(steps_job(steps=1, delay=0))
    assert api.wait(next_job, timeout=10)["status"] == "SUCCESS"
    assert time.monotonic() - started < 5
    assert api.status(task_id)["status"] == "REVOKED"
    assert api.http.get(f"/api/v1/tasks/{task_id}/result/").status_code == 409


# -- more of the contract -------------------------------------------------------------------------
def test_cancelled_queued_job_never_runs(api: Api, busy_cpu: str, redis_client: Any) -> None:
    queued = api.submit(steps_job(steps=1, delay=0, marker="never-runs"))
    assert api.status(queued)["status"] == "PENDING"
    assert api.cancel(queued).json()["status"] == "REVOKED"
    assert redis_client.zscore(queued_key("cpu"), queued) is None
    follower = api.submit(steps_job(steps=1, delay=0, marker="runs-after"))
    api.cancel(busy_cpu)
    assert api.wait(follower)["status"] == "SUCCESS"  # FIFO: the cancelled message was consumed first
    assert redis_client.get(executions_key("never-runs")) is None
    assert redis_client.get(executions_key("runs-after")) == b"1"
    assert api.status(queued)["status"] == "REVOKED"


def test_queue_position_and_eta(api: Api, redis_client: Any) -> None:
    assert api.wait(api.submit(steps_job(steps=1, delay=0)))["status"] == "SUCCESS"  # teaches a typical run time
    blocker = api.submit(steps_job(steps=30, delay=0.5))  # 15 s, its progress changing every 0.5 s
    wait_until(lambda: api.status(blocker)["progress"] >= 6, 20, what="the blocker's pace to show")
    queued = [api.submit(steps_job(steps=1, delay=0.2)) for _ in range(3)]
    try:

        def snapshot() -> list[dict[str, Any]] | None:  # the blocker's pace read the same for all three
            before = api.status(blocker)["progress"]
            statuses = [api.status(task_id) for task_id in queued]
            return statuses if api.status(blocker)["progress"] == before else None

        statuses = wait_until(snapshot, 10, interval=0, what="three statuses between two progress updates")
        assert [status["position"] for status in statuses] == [1, 2, 3]
        assert statuses[2]["message"].startswith("Queued — 3rd in the cpu queue")
        # The running job's pace says it has ~14 s left: most of the wait, not the quick jobs ahead.
        assert 8 < statuses[0]["eta_seconds"] < 45, statuses[0]
        assert statuses[2]["eta_seconds"] >= statuses[0]["eta_seconds"]
        assert "starts in about" in statuses[2]["message"]
    finally:
        for task_id in [*queued, blocker]:
            api.cancel(task_id)
    wait_until(lambda: waiting_messages(redis_client, "cpu") == 0, 20, what="cpu queue drained")


def test_progress_is_published_and_monotonic(api: Api) -> None:
    trace = api.trace(api.submit(steps_job(steps=8, delay=0.3)))
    processing = [status for status in trace if status["status"] == "PROCESSING"]
    assert len({status["progress"] for status in processing}) >= 4
    assert [s["progress"] for s in processing] == sorted(s["progress"] for s in processing)
    assert any(status["message"] == "Step 5/8" for status in processing)
    assert all(0 <= status["progress"] <= 100 for status in trace)


def test_status_can_wait_for_the_next_change(api: Api) -> None:
    """``?wait=S`` answers as soon as the job's status changes, not after S seconds: a script
    following a job with it sees every step, in order, once each."""
    task_id = api.submit(steps_job(steps=4, delay=1.0))
    seen = [api.wait(task_id, states=("PROCESSING",))]
    started = time.monotonic()
    while seen[-1]["status"] not in FINISHED:
        response = api.http.get(f"/api/v1/tasks/{task_id}/status/?wait=25")
        assert response.status_code == 200, response.text
        seen.append(response.json())
        assert seen[-1] != seen[-2], "an answer came with nothing changed before the wait was over"
        assert len(seen) < 20
    assert time.monotonic() - started < 20  # woken by each change: four steps of 1 s, not 25 s waits
    assert seen[-1]["status"] == "SUCCESS"
    progress = [status["progress"] for status in seen]
    assert progress == sorted(progress) and progress[-1] == 100
    assert {f"Step {n}/4" for n in (2, 3, 4)} <= {status["message"] for status in seen}
    # A finished job answers at once, whatever the wait.
    started = time.monotonic()
    assert api.http.get(f"/api/v1/tasks/{task_id}/status/?wait=25").json()["status"] == "SUCCESS"
    assert time.monotonic() - started < 5


def test_status_wait_notices_a_cancel(api: Api, busy_cpu: str) -> None:
    """A cancel is not published on the job's channel; the waiting request still sees it."""
    queued = api.submit(steps_job(steps=1, delay=0))
    before = api.status(queued)
    assert before["status"] == "PENDING"
    threading.Timer(0.3, lambda: api.cancel(queued)).start()
    after = api.http.get(f"/api/v1/tasks/{queued}/status/?wait=25").json()
    assert after["status"] == "REVOKED", after


def test_status_wait_holds_a_queued_job_and_serves_many_waiters(api: Api, busy_cpu: str) -> None:
    """A queued job's start estimate moves with the clock; that alone is no change to wake for.
    More waiters than a Redis connection pool's default size (100) all wait and get their answer."""
    queued = api.submit(steps_job(steps=1, delay=0))
    started = time.monotonic()
    held = api.http.get(f"/api/v1/tasks/{queued}/status/?wait=2").json()
    assert held["status"] == "PENDING" and held["position"] == 1, held
    assert time.monotonic() - started >= 1.5  # waited out, not woken by the estimate

    def timed_wait(_: int) -> tuple[Any, float]:
        started = time.monotonic()
        return api.http.get(f"/api/v1/tasks/{queued}/status/?wait=2"), time.monotonic() - started

    with ThreadPoolExecutor(150) as pool:
        answers = list(pool.map(timed_wait, range(150)))
    assert {response.status_code for response, _ in answers} == {200}, {r.status_code: r.text for r, _ in answers}
    assert {response.json()["status"] for response, _ in answers} == {"PENDING"}
    # Each waited (a listener that cannot connect in a burst answers at once instead; past the
    # asyncio pool's default of 100 connections, 50 would).
    assert sum(elapsed >= 1.5 for _, elapsed in answers) >= 120
    api.cancel(queued)


def test_a_waiter_ends_when_its_client_is_gone(api: Api, busy_cpu: str) -> None:
    """``gone()`` (the client disconnected, or the server is stopping) ends the wait within a recheck."""
    from jobs import get_client

    queued = api.submit(steps_job(steps=1, delay=0))
    asks = []

    async def gone() -> bool:
        asks.append(time.monotonic())
        return len(asks) > 1

    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:  # a thread of its own: Playwright's sync API keeps a loop in this one
        status = pool.submit(asyncio.run, get_client().watch(queued, 25, gone)).result()
    assert status.status == "PENDING" and len(asks) == 2
    assert time.monotonic() - started < 10  # not the 25 s asked for
    api.cancel(queued)


def test_status_wait_must_be_a_number_of_seconds(api: Api) -> None:
    task_id = api.submit(steps_job(steps=1, delay=0))
    for wait in ("abc", "-1", "31", "30.5", "nan", "inf", "1e400", "", "1_0", "\u0661", " 1 ", "0x1"):
        response = api.http.get(f"/api/v1/tasks/{task_id}/status/", params={"wait": wait})
        assert response.status_code == 400, (wait, response.text)
        assert "wait must be a number of seconds from 0 to 30" in response.json()["details"]["wait"][0]
    for wait in ("0", "30", "0.25", ".5", "30.0"):
        assert api.http.get(f"/api/v1/tasks/{task_id}/status/", params={"wait": wait}).status_code == 200, wait
    missing = api.http.get("/api/v1/tasks/00000000-0000-4000-8000-000000000000/status/?wait=5")
    assert missing.status_code == 404 and missing.json()["error"] == "Task not found"


def test_step_previews_reach_the_status(api: Api) -> None:
    """An engine's progress preview shows in /status/ as a small base64 PNG, then goes with the run."""
    big = Image.new("RGB", (640, 320), (200, 30, 90))
    task_id = api.submit(
        {"task_type": "test_steps", "image": b64(big), "parameters": {"steps": 40, "delay": 0.05, "preview": True}}
    )
    status = api.wait(task_id, states=("PROCESSING",))
    status = wait_until(lambda: (s := api.status(task_id)).get("preview") and s, 10, what="a preview")
    preview = Image.open(io.BytesIO(base64.b64decode(status["preview"])))
    assert preview.format == "PNG" and max(preview.size) <= 256 and preview.size == (256, 128)
    assert preview.getpixel((5, 5)) == (200, 30, 90)
    assert "preview" not in api.wait(task_id)  # finished: no preview field
    plain = api.submit(steps_job(steps=3))
    assert all("preview" not in status for status in api.trace(plain))


def test_cancel_of_a_finished_job_keeps_its_result(api: Api) -> None:
    task_id = api.submit(steps_job(steps=1, delay=0))
    assert api.wait(task_id)["status"] == "SUCCESS"
    response = api.cancel(task_id)
    assert response.status_code == 409
    assert response.json() == {"error": "Task already finished", "status": "SUCCESS", "task_id": task_id}
    assert api.http.get(f"/api/v1/tasks/{task_id}/result/").status_code == 200


def test_result_of_unfinished_job_is_409(api: Api, busy_cpu: str) -> None:
    response = api.http.get(f"/api/v1/tasks/{busy_cpu}/result/")
    assert response.status_code == 409
    assert response.json()["status"] == "PROCESSING"


def test_unknown_and_malformed_ids_are_404(api: Api) -> None:
    for task_id in ("00000000-0000-4000-8000-000000000000", "not-a-uuid", "1' OR '1'='1", "%00", "a" * 300):
        for method, path in (("get", "status"), ("get", "result"), ("post", "cancel")):
            response = api.http.request(method, f"/api/v1/tasks/{task_id}/{path}/")
            assert response.status_code == 404, (task_id, path, response.text)
            assert response.json()["error"] == "Task not found"


def test_a_wrong_method_or_path_answers_in_the_apis_shape(api: Api) -> None:
    task = "/api/v1/tasks/00000000-0000-4000-8000-000000000000"
    for method, path, allowed in (
        ("get", "/api/v1/tasks/submit/", "POST"),
        ("delete", "/api/v1/tasks/submit", "POST"),
        ("get", f"{task}/cancel/", "POST"),
        ("post", f"{task}/status/", "GET"),
        ("delete", f"{task}/result/", "GET"),
        ("post", "/healthz", "GET, HEAD"),
    ):
        response = api.http.request(method, path)
        assert response.status_code == 405, (method, path, response.text)
        assert response.headers["allow"] == allowed
        assert response.json()["error"] == "Method not allowed" and allowed.split(",")[0] in response.json()["message"]
    # An id that is not one path segment is still an unknown task, not the page's 404.
    response = api.http.get("/api/v1/tasks/..%2F..%2Fetc/status/")
    assert response.status_code == 404 and response.json()["error"] == "Task not found"
    response = api.http.get("/api/v2/tasks/")
    assert response.status_code == 404 and "/docs" in response.json()["message"]
    assert api.http.head("/healthz").status_code == 200


def test_routing_follows_the_registry(api: Api, photo: Image.Image) -> None:
    style = api.submit({"task_type": "style_transfer", "image": b64(photo), "parameters": {"style": "mosaic"}})
    assert api.status(style)["queue"] == "gpu"
    assert api.wait(style)["status"] == "SUCCESS"
    result = api.http.get(f"/api/v1/tasks/{style}/result/").json()["result"]
    assert result["metadata"]["worker"] == "session-gpu@test"
    steps = api.submit(steps_job(steps=1, delay=0))
    api.wait(steps)
    assert api.http.get(f"/api/v1/tasks/{steps}/result/").json()["result"]["metadata"]["worker"] == "session-cpu@test"


def test_an_engine_can_route_a_job_to_another_queue(api: Api, photo: Image.Image, mask: Image.Image) -> None:
    """Object removal runs on the cpu queue, but its diffusion engine where the diffusion model lives."""
    body = {"task_type": "object_removal", "image": b64(photo), "mask": b64(mask)}
    assert api.status(api.submit(body))["queue"] == "cpu"
    assert api.status(api.submit({**body, "parameters": {"engine": "telea"}}))["queue"] == "cpu"
    assert api.status(api.submit({**body, "parameters": {"engine": "diffusion"}}))["queue"] == "gpu"


def test_model_loads_once_per_worker_process(api: Api, photo: Image.Image) -> None:
    small = photo.resize((120, 80))
    loads = []
    for style in ("mosaic", "comic", "woven"):
        task_id = api.submit({"task_type": "style_transfer", "image": b64(small), "parameters": {"style": style}})
        api.wait(task_id)
        loads.append(
            api.http.get(f"/api/v1/tasks/{task_id}/result/").json()["result"]["metadata"]["model_loads_in_process"]
        )
    assert loads == [1, 1, 1]


def test_images_live_in_redis_not_in_messages(
    api: Api, busy_cpu: str, redis_client: Any, photo: Image.Image, mask: Image.Image
) -> None:
    task_id = api.submit({"task_type": "object_removal", "image": b64(photo), "mask": b64(mask)})
    messages = redis_client.lrange("cpu", 0, -1)
    ours = [message for message in messages if task_id.encode() in message]
    assert len(ours) == 1 and len(ours[0]) < 4000  # the photo alone is ~700 kB of base64
    ttl = redis_client.ttl(input_key(task_id, "image"))
    assert 3500 < ttl <= 3600 and 3500 < redis_client.ttl(job_key(task_id)) <= 3600
    api.cancel(task_id)


def test_failures_are_readable_and_the_worker_keeps_serving(api: Api, photo: Image.Image, mask: Image.Image) -> None:
    failed = api.wait(api.submit(steps_job(steps=1, delay=0, fail=True)))
    assert failed["status"] == "FAILURE" and failed["message"] == "Asked to fail"
    crashed = api.wait(api.submit(steps_job(steps=1, delay=0, crash=True)))
    assert crashed["status"] == "FAILURE"
    assert crashed["message"] == "test_steps failed: ZeroDivisionError: division by zero"
    # Missing weights: the message names the file (the session's models folder has no LaMa).
    body = {"task_type": "object_removal", "image": b64(photo), "mask": b64(mask), "parameters": {"engine": "lama"}}
    no_weights = api.wait(api.submit(body))
    assert no_weights["status"] == "FAILURE" and "big-lama.pt" in no_weights["message"], no_weights
    assert "Traceback" not in no_weights["message"]
    assert api.wait(api.submit(steps_job(steps=1, delay=0)))["status"] == "SUCCESS"


def test_multipart_upload(api: Api, photo: Image.Image, mask: Image.Image) -> None:
    response = api.http.post(
        "/api/v1/tasks/submit/",
        data={"task_type": "object_removal", "parameters": json.dumps({"dilate": 2})},
        files={
            "image": ("photo.jpg", png_bytes(photo, "JPEG"), "image/jpeg"),
            "mask": ("m.png", png_bytes(mask), "image/png"),
        },
    )
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    assert api.wait(task_id)["status"] == "SUCCESS"
    assert api.http.get(f"/api/v1/tasks/{task_id}/result/").json()["result"]["metadata"]["parameters"]["dilate"] == 2


def test_body_limits_and_content_types(api: Api, monkeypatch: Any) -> None:
    from api.deps import app_settings
    from settings import get_settings

    small = get_settings().model_copy(update={"max_upload_mb": 0.01})
    monkeypatch.setitem(api.http.app.dependency_overrides, app_settings, lambda: small)
    big = {"task_type": "background_removal", "image": "A" * 20_000}
    assert api.http.post("/api/v1/tasks/submit/", json=big).status_code == 413
    monkeypatch.undo()
    text = api.http.post("/api/v1/tasks/submit/", content=b"task_type=x", headers={"content-type": "text/plain"})
    assert text.status_code == 415
    broken = api.http.post("/api/v1/tasks/submit/", content=b"{nope", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "body" in broken.json()["details"]
    array = api.http.post("/api/v1/tasks/submit/", json=[1, 2])
    assert array.status_code == 400 and "body" in array.json()["details"]


def test_healthz_lists_live_workers_per_queue(api: Api) -> None:
    health = api.http.get("/healthz").json()
    assert health["status"] == "ok" and health["redis"]["reachable"]
    assert health["queues"]["gpu"]["workers"] == ["session-gpu@test"]
    assert health["queues"]["cpu"]["workers"] == ["session-cpu@test"]


def test_styles_and_openapi(api: Api) -> None:
    styles = api.http.get("/api/v1/styles/").json()
    assert {"mosaic", "starry-night"} <= {style["name"] for style in styles}
    thumbnail = api.http.get(styles[0]["thumbnail_url"])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    paths = api.http.get("/openapi.json").json()["paths"]
    assert {"/api/v1/tasks/submit/", "/api/v1/tasks/{task_id}/status/", "/api/v1/tasks/{task_id}/result/",
            "/api/v1/tasks/{task_id}/cancel/", "/healthz", "/api/v1/styles/"} <= set(paths)  # fmt: skip
    docs = api.http.get("/docs")
    assert docs.status_code == 200 and "cdn.jsdelivr" not in docs.text  # works on an offline install
    script = re.search(r'src="([^"]*swagger-ui-bundle.js)"', docs.text)
    assert script and api.http.get(script.group(1)).status_code == 200
    submit = paths["/api/v1/tasks/submit/"]["post"]
    assert {"application/json", "multipart/form-data"} <= set(submit["requestBody"]["content"])
    assert {"202", "400", "413", "415"} <= set(submit["responses"])


def test_output_keys_share_the_ttl(api: Api, redis_client: Any) -> None:
    task_id = api.submit(steps_job(steps=1, delay=0))
    api.wait(task_id)
    ttls = [redis_client.ttl(key) for key in (job_key(task_id), output_key(task_id), input_key(task_id, "image"),
                                               f"celery-task-meta-{task_id}")]  # fmt: skip
    assert all(3590 <= ttl <= 3600 for ttl in ttls), ttls


def test_hostile_bodies_are_400s_not_500s(api: Api, redis_client: Any) -> None:
    settle(redis_client)
    keys = job_ids(redis_client)
    deep = '{"task_type": "image_generation", "prompt": "x", "parameters": {"width": ' + "[" * 5000 + "]" * 5000 + "}}"
    cases = [
        (deep, "body"),
        ('{"task_type": "image_generation", "prompt": "x", "parameters": {"guidance_scale": NaN}}', "body"),
        ('{"task_type": "image_generation", "prompt": "x", "parameters": {"steps": Infinity}}', "body"),
        (b'{"task_type": "image_generation", "prompt": "\xff\xfe"}', "body"),
        ("null", "body"),
        ("", "body"),
    ]
    for body, field in cases:
        response = api.http.post("/api/v1/tasks/submit/", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, (body[:60], response.text[:200])
        assert field in response.json()["details"]
    flood = {"task_type": "image_generation", "prompt": "x", "parameters": {f"p{i}": i for i in range(5000)}}
    response = api.http.post("/api/v1/tasks/submit/", json=flood)
    assert response.status_code == 400 and len(response.content) < 10_000
    long_name = api.http.post("/api/v1/tasks/submit/", json={"task_type": "x" * 100_000})
    assert long_name.status_code == 400 and len(long_name.content) < 2_000
    assert job_ids(redis_client) == keys


def test_multipart_is_as_strict_as_json(api: Api, photo: Image.Image, mask: Image.Image) -> None:
    files = [
        ("image", ("a.png", png_bytes(photo), "image/png")),
        ("image", ("b.png", png_bytes(photo), "image/png")),
        ("mask", ("m.png", png_bytes(mask), "image/png")),
    ]
    twice = api.http.post("/api/v1/tasks/submit/", data={"task_type": "object_removal"}, files=files)
    assert twice.status_code == 400 and "more than once" in twice.json()["details"]["image"][0]
    unknown = api.http.post(
        "/api/v1/tasks/submit/",
        data={"task_type": "object_removal"},
        files=[files[0], files[2], ("bogus", ("x.png", png_bytes(mask), "image/png"))],
    )
    assert unknown.status_code == 400 and "Unknown field" in unknown.json()["details"]["bogus"][0]


def test_base64_as_common_tools_write_it(api: Api, photo: Image.Image, mask: Image.Image) -> None:
    raw = png_bytes(photo.resize((120, 80)))
    wrapped = "\n".join(textwrap.wrap(base64.b64encode(raw).decode(), 76))  # `base64 photo.png`
    unpadded = base64.b64encode(raw).decode().rstrip("=")
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    for image in (wrapped, unpadded, urlsafe):
        body = {"task_type": "object_removal", "image": image, "mask": b64(mask.resize((120, 80)))}
        assert api.http.post("/api/v1/tasks/submit/", json=body).status_code == 202


def test_routes_answer_with_or_without_the_trailing_slash(api: Api) -> None:
    task_id = api.submit(steps_job(steps=1, delay=0))
    api.wait(task_id)
    assert api.http.get(f"/api/v1/tasks/{task_id}/status").json()["status"] == "SUCCESS"
    assert api.http.get(f"/api/v1/tasks/{task_id}/result?format=png").headers["content-type"] == "image/png"
    assert api.http.get("/api/v1/styles").status_code == 200
    assert api.http.get("/healthz/").json()["status"] == "ok"
    assert api.http.post("/api/v1/tasks/submit", json=steps_job(steps=1, delay=0)).status_code == 202
    paths = api.http.get("/openapi.json").json()["paths"]
    assert "/api/v1/tasks/submit" not in paths  # the aliases stay out of the schema
