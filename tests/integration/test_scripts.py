"""For scripts: event streams, idempotent submits and ``Prefer: wait`` against the real stack."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.conftest import b64
from tests.integration.conftest import Api
from tests.integration.test_batches import batch_waiting, wait_batch
from tests.integration.test_jobs import SMALL, steps_job
from tests.support.operations import executions_key
from tests.support.stack import job_ids, settle, wait_until


def read_events(response: httpx.Response, limit: int = 1000) -> list[dict[str, Any]]:
    """The SSE events of a response as {"id", "event", "data"}, and the comments as {"comment"}."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            events.append({"comment": line[1:].strip()})
        elif line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("event: "):
            current["event"] = line[7:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and current:
            events.append(current)
            current = {}
            if len(events) >= limit:
                break
    return events


def test_a_jobs_event_stream_tells_each_change_in_order_and_ends(live_server: str) -> None:
    with httpx.Client(base_url=live_server, timeout=30) as http:
        task_id = http.post("/api/v1/tasks/submit/", json=steps_job(steps=8, delay=0.1)).json()["task_id"]
        with http.stream("GET", f"/api/v1/tasks/{task_id}/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [event for event in read_events(response) if "comment" not in event]
    assert all(event["event"] == "status" for event in events)
    ids = [event["id"] for event in events]
    assert ids == list(range(1, len(ids) + 1))
    statuses = [event["data"] for event in events]
    assert statuses[-1]["status"] == "SUCCESS" and statuses[-1]["progress"] == 100
    assert all(status["task_id"] == task_id for status in statuses)
    progress = [status["progress"] for status in statuses if status["status"] == "PROCESSING"]
    assert len(progress) >= 4 and progress == sorted(progress)  # one event per step, never backwards
    assert len({json.dumps(status, sort_keys=True) for status in statuses}) == len(statuses)  # no repeats


def test_an_event_stream_resumes_after_the_last_event_id(live_server: str) -> None:
    with httpx.Client(base_url=live_server, timeout=30) as http:
        task_id = http.post("/api/v1/tasks/submit/", json=steps_job(steps=6, delay=0.15)).json()["task_id"]
        with http.stream("GET", f"/api/v1/tasks/{task_id}/events") as response:
            first = read_events(response, limit=2)
        seen = first[-1]["id"]
        with http.stream("GET", f"/api/v1/tasks/{task_id}/events", headers={"Last-Event-ID": str(seen)}) as response:
            rest = [event for event in read_events(response) if "comment" not in event]
        assert rest[0]["id"] == seen + 1 and [event["id"] for event in rest] == list(
            range(seen + 1, seen + 1 + len(rest))
        )
        assert rest[-1]["data"]["status"] == "SUCCESS"
        finished = http.get(f"/api/v1/tasks/{task_id}/events")  # a finished job: one event, then the end
        assert [event["data"]["status"] for event in read_events(finished)] == ["SUCCESS"]
        unknown = http.get("/api/v1/tasks/00000000-0000-4000-8000-000000000000/events")
        assert unknown.status_code == 404 and unknown.json()["error"] == "Task not found"


def test_a_batchs_event_stream_ends_when_every_item_has(live_server: str) -> None:
    body = {
        "task_type": "test_steps",
        "parameters": {"steps": 2, "delay": 0.05},
        "items": [{"image": b64(SMALL)} for _ in range(4)],
    }
    with httpx.Client(base_url=live_server, timeout=60) as http:
        batch_id = http.post("/api/v1/batches/", json=body).json()["batch_id"]
        with http.stream("GET", f"/api/v1/batches/{batch_id}/events") as response:
            events = [event for event in read_events(response) if "comment" not in event]
        assert events[-1]["data"]["status"] == "SUCCESS" and events[-1]["data"]["counts"]["SUCCESS"] == 4
        done = [event["data"]["counts"]["SUCCESS"] for event in events]
        assert done == sorted(done) and len(events) >= 2
        assert http.get("/api/v1/batches/nope/events").status_code == 404


def test_an_idempotent_retry_answers_the_first_submit_and_enqueues_nothing(api: Api, redis_client: Any) -> None:
    body = steps_job(steps=1, delay=0, marker="idempotent-retry")
    first = api.http.post("/api/v1/tasks/submit/", json=body, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 202
    settle(redis_client)
    before = job_ids(redis_client)
    again = api.http.post("/api/v1/tasks/submit/", json=body, headers={"Idempotency-Key": "order-42"})
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert job_ids(redis_client) == before
    other = api.http.post("/api/v1/tasks/submit/", json=steps_job(steps=2), headers={"Idempotency-Key": "order-42"})
    assert other.status_code == 422 and "another request body" in other.json()["message"]
    reordered = {key: body[key] for key in reversed(list(body))}  # the same content, written otherwise
    assert (
        api.http.post("/api/v1/tasks/submit/", json=reordered, headers={"Idempotency-Key": "order-42"}).status_code
        == 200
    )
    fresh = api.http.post("/api/v1/tasks/submit/", json=body, headers={"Idempotency-Key": "order-43"})
    assert fresh.status_code == 202 and fresh.json()["task_id"] != first.json()["task_id"]
    for bad in (b"", b"x" * 256, "naïve".encode()):
        refused = api.http.post("/api/v1/tasks/submit/", json=body, headers={"Idempotency-Key": bad})
        assert refused.status_code == 400 and "Idempotency-Key" in refused.json()["details"], bad


def test_two_identical_submits_at_once_make_one_job(api: Api, redis_client: Any) -> None:
    body = steps_job(steps=1, delay=0, marker="idempotent-race")
    barrier = threading.Barrier(6)

    def submit(_: int) -> httpx.Response:
        barrier.wait()
        return api.http.post("/api/v1/tasks/submit/", json=body, headers={"Idempotency-Key": "race-1"})

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(submit, range(6)))
    assert sorted(answer.status_code for answer in answers) == [200] * 5 + [202]
    assert len({answer.json()["task_id"] for answer in answers}) == 1
    api.wait(answers[0].json()["task_id"])
    assert redis_client.get(executions_key("idempotent-race")) == b"1"


def test_an_idempotent_batch_and_a_refused_submit_frees_its_key(api: Api, redis_client: Any) -> None:
    body = {"task_type": "test_steps", "parameters": {"steps": 1, "delay": 0}, "items": [{"image": b64(SMALL)}]}
    waiting = batch_waiting(redis_client)
    first = api.http.post("/api/v1/batches/", json=body, headers={"Idempotency-Key": "batch-7"})
    again = api.http.post("/api/v1/batches/", json=body, headers={"Idempotency-Key": "batch-7"})
    assert first.status_code == 202 and again.status_code == 200 and again.json() == first.json()
    wait_batch(api, first.json()["batch_id"])
    assert batch_waiting(redis_client) <= waiting
    bad = api.http.post("/api/v1/tasks/submit/", json={"task_type": "test_steps"}, headers={"Idempotency-Key": "k-9"})
    assert bad.status_code == 400  # nothing accepted: the key stays free for the corrected submit
    good = api.http.post("/api/v1/tasks/submit/", json=steps_job(steps=1, delay=0), headers={"Idempotency-Key": "k-9"})
    assert good.status_code == 202


def test_prefer_wait_answers_with_the_final_status(api: Api) -> None:
    quick = api.http.post("/api/v1/tasks/submit/", json=steps_job(steps=2, delay=0.05), headers={"Prefer": "wait=10"})
    assert quick.status_code == 200 and quick.headers["Preference-Applied"] == "wait=10"
    assert quick.json()["status"] == "SUCCESS" and quick.json()["result_available"] is True
    started = time.monotonic()
    slow = api.http.post("/api/v1/tasks/submit/", json=steps_job(steps=40, delay=0.1), headers={"Prefer": "wait=1"})
    assert slow.status_code == 202 and "Preference-Applied" not in slow.headers
    assert 0.9 < time.monotonic() - started < 4
    api.cancel(slow.json()["task_id"])
    failed = api.http.post(
        "/api/v1/tasks/submit/", json=steps_job(steps=1, delay=0, fail=True), headers={"Prefer": "wait=10"}
    )
    assert failed.status_code == 200 and failed.json()["status"] == "FAILURE"
    body = {"task_type": "test_steps", "parameters": {"steps": 1, "delay": 0}, "items": [{"image": b64(SMALL)}] * 3}
    batch = api.http.post("/api/v1/batches/", json=body, headers={"Prefer": "respond-async, wait=20"})
    assert batch.status_code == 200 and batch.json()["status"] == "SUCCESS" and batch.json()["counts"]["SUCCESS"] == 3


def test_prefer_wait_follows_a_job_through_its_progress_and_its_cancel(api: Api) -> None:
    """Past its progress messages (a job running 0.6 s publishes some) to its end; a cancel ends it too."""
    steady = api.http.post("/api/v1/tasks/submit/", json=steps_job(steps=6, delay=0.1), headers={"Prefer": "wait=20"})
    assert steady.status_code == 200 and steady.json()["status"] == "SUCCESS" and steady.json()["progress"] == 100

    before = {task["task_id"] for task in api.http.get("/api/v1/tasks/").json()["tasks"]}

    def cancel_once_running() -> None:  # the waited job: the new one, once it runs
        def running() -> str | None:
            tasks = api.http.get("/api/v1/tasks/").json()["tasks"]
            processing = [task["task_id"] for task in tasks if task["status"] == "PROCESSING"]
            new = [task_id for task_id in processing if task_id not in before]
            return new[0] if new else None

        api.cancel(wait_until(running, 20, interval=0.1, what="the waited job to run"))

    with ThreadPoolExecutor(1) as pool:
        canceller = pool.submit(cancel_once_running)
        started = time.monotonic()
        cancelled = api.http.post(
            "/api/v1/tasks/submit/", json=steps_job(steps=100, delay=0.1), headers={"Prefer": "wait=30"}
        )
    canceller.result()
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "REVOKED"
    assert time.monotonic() - started < 25  # told at the cancel, not at the 30 s asked for (nor the 10 s job's end)


def test_a_submitters_wait_for_a_job_that_ended_before_it_listened_answers_at_once(api: Api) -> None:
    """The job ended before the wait subscribed (its end's message missed): the one read after subscribing tells."""
    import asyncio

    from jobs import get_client
    from jobs.status import JobStatus

    client = get_client()
    submitted = client.submit(steps_job(steps=1, delay=0))
    api.wait(submitted.task_id)
    poll, reads = client.long_poll, []
    read = poll.status

    def counted(task_id: str) -> JobStatus:
        reads.append(task_id)
        return read(task_id)

    poll.status = counted
    try:
        with ThreadPoolExecutor(1) as pool:  # a thread of its own: an event loop of its own
            status = pool.submit(asyncio.run, client.ended(submitted, 20)).result()
    finally:
        poll.status = read
    assert status.status == "SUCCESS" and status.result_available is True
    assert reads == []  # told by its published end, not by a status read after a recheck


def test_openapi_documents_the_script_headers_and_routes(api: Api) -> None:
    paths = api.http.get("/openapi.json").json()["paths"]
    assert {"/api/v1/tasks/{task_id}/events", "/api/v1/batches/{batch_id}/events", "/api/v1/batches/"} <= set(paths)
    for route in ("/api/v1/tasks/submit/", "/api/v1/batches/"):
        names = {parameter["name"] for parameter in paths[route]["post"]["parameters"]}
        assert {"Idempotency-Key", "Prefer"} <= names
        assert {"200", "202", "422"} <= set(paths[route]["post"]["responses"])
    events = paths["/api/v1/tasks/{task_id}/events"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]
    assert "Last-Event-ID" in {parameter["name"] for parameter in events["parameters"]}
