"""Webhooks on the real stack: REST → Redis → a real worker, whose main process signs and POSTs
the events to a receiver on 127.0.0.1 (allowed in this stack's settings), verified there with the
``standardwebhooks`` package. Its own Redis server and worker: the session's workers have no secret."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from jobs import JobClient
from jobs.deliveries import DUE, WATCHED, Delivery, DeliveryQueue, delivery_key
from settings import Settings
from tests.conftest import png_bytes
from tests.integration.conftest import Api
from tests.integration.test_jobs import SMALL, steps_job
from tests.support.receiver import Received, Receiver, failing_first, receiving
from tests.support.stack import RedisServer, Worker, job_ids, wait_until, waiting_messages

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
DELAYS = "0.3,0.3,0.3"  # four attempts in all, quickly
WEBHOOK_ENV = {"ATELIER_WEBHOOK_SECRET": SECRET, "ATELIER_WEBHOOK_ALLOW": "127.0.0.0/8",
               "ATELIER_WEBHOOK_RETRY_DELAYS": DELAYS}  # fmt: skip


@dataclass
class Stack:
    api: Api
    receiver: Receiver
    db: redis.Redis
    url: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[Stack]:
    from api import create_api

    server = RedisServer(tmp_path_factory.mktemp("webhooks-redis"))
    worker = Worker("cpu", "webhooks", env={"REDIS_URL": server.url, **WEBHOOK_ENV},
                    log=artifacts / "worker-webhooks.log")  # fmt: skip
    settings = Settings(redis_url=server.url, webhook_secret=SECRET, webhook_allow="127.0.0.0/8",
                        webhook_retry_delays=DELAYS)  # fmt: skip
    client = JobClient(settings)
    try:
        with receiving() as receiver, TestClient(create_api(lambda: client, settings)) as http:
            worker.wait_ready(client.store.redis)
            yield Stack(Api(http), receiver, client.store.redis, server.url)
    finally:
        worker.stop()
        server.stop()


def verified(request: Received) -> dict[str, Any]:
    """The body, once its signature checks out as any Standard Webhooks receiver checks it."""
    payload: dict[str, Any] = Webhook(SECRET).verify(request.body, request.headers)
    assert request.headers["content-type"] == "application/json"
    return payload


def webhook_of(api: Api, task_id: str, delivered: int, timeout: float = 60) -> dict[str, Any]:
    """The job's webhook report once ``delivered`` events went through."""

    def reached() -> dict[str, Any] | None:
        report: dict[str, Any] = api.status(task_id)["webhook"]
        return report if report["delivered"] >= delivered else None

    result: dict[str, Any] = wait_until(reached, timeout, interval=0.1, what=f"{delivered} deliveries of {task_id}")
    return result


def quiet(db: redis.Redis) -> None:
    """Nothing watched, nothing due: every event is queued and settled."""
    wait_until(lambda: not db.exists(WATCHED) and not db.exists(DUE), 60, interval=0.1, what="webhooks to settle")


def test_the_completed_event_by_default_signed_and_counted(stack: Stack) -> None:
    api, receiver = stack.api, stack.receiver
    task_id = api.submit({**steps_job(steps=5, delay=0.05), "webhook": receiver.url + "/default"})
    assert api.status(task_id)["webhook"] == {"delivered": 0, "failed": 0}
    assert api.wait(task_id)["status"] == "SUCCESS"
    assert webhook_of(api, task_id, 1) == {"delivered": 1, "failed": 0}
    quiet(stack.db)
    [request] = receiver.to("/default")  # no start, no progress: only completed was asked for (the default)
    payload = verified(request)
    assert payload["task_id"] == task_id and payload["status"] == "SUCCESS" and payload["progress"] == 100
    assert payload["result_available"] is True and payload["task_type"] == "test_steps"
    assert request.headers["atelier-event"] == "completed" and request.headers["webhook-id"].startswith("msg_")
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 120


def test_a_waited_submit_reports_its_webhook_too(stack: Stack) -> None:
    """``Prefer: wait`` answers with the final status, webhook report included, as a status read would."""
    api, receiver = stack.api, stack.receiver
    body = {**steps_job(steps=2, delay=0.02), "webhook": receiver.url + "/waited"}
    answer = api.http.post("/api/v1/tasks/submit/", json=body, headers={"Prefer": "wait=20"})
    assert answer.status_code == 200 and answer.json()["status"] == "SUCCESS"
    assert set(answer.json()["webhook"]) >= {"delivered", "failed"}
    assert webhook_of(api, answer.json()["task_id"], 1) == {"delivered": 1, "failed": 0}
    quiet(stack.db)


def test_failed_deliveries_are_retried_with_the_same_id(stack: Stack) -> None:
    api, receiver = stack.api, stack.receiver
    receiver.answers["/flaky"] = failing_first(2)
    receiver.answers["/down"] = lambda request, earlier: (503, {})
    flaky = api.submit({**steps_job(steps=2, delay=0.01), "webhook": receiver.url + "/flaky"})
    down = api.submit({**steps_job(steps=2, delay=0.01), "webhook": receiver.url + "/down"})

    report = webhook_of(api, flaky, 1)
    attempts = receiver.to("/flaky")
    assert len(attempts) == 3  # two 500s, then the 200
    assert len({request.headers["webhook-id"] for request in attempts}) == 1
    assert len({request.body for request in attempts}) == 1
    assert all(verified(request)["task_id"] == flaky for request in attempts)  # each attempt signed afresh
    # delivered counts events; failed counts failed attempts; last_error tells the last one.
    assert report["delivered"] == 1 and report["failed"] == 2
    assert report["last_error"] == "HTTP 500 (attempt 2 of 4; trying again in 0.3 s)"

    quiet(stack.db)
    assert len(receiver.to("/down")) == 4  # the first attempt and three retries, then given up
    assert api.status(down)["webhook"] == {
        "delivered": 0,
        "failed": 4,
        "last_error": "HTTP 503 (attempt 4 of 4; given up)",
    }


def test_events_are_the_ones_asked_for_multipart_too(stack: Stack) -> None:
    """start + completed asked (as a form field): exactly those two, nothing of the progress."""
    api, receiver = stack.api, stack.receiver
    form = {"task_type": "test_steps", "parameters": json.dumps({"steps": 30, "delay": 0.1}),
            "webhook": receiver.url + "/start-end", "webhook_events": "start,completed"}  # fmt: skip
    response = api.http.post("/api/v1/tasks/submit/", data=form, files={"image": ("a.png", png_bytes(SMALL))})
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    assert api.wait(task_id, timeout=60)["status"] == "SUCCESS"
    webhook_of(api, task_id, 2)
    quiet(stack.db)
    events = {request.headers["atelier-event"]: verified(request) for request in receiver.to("/start-end")}
    assert len(receiver.to("/start-end")) == 2 and set(events) == {"start", "completed"}
    assert events["start"]["status"] == "PROCESSING" and events["start"]["progress"] < 100
    assert events["completed"]["status"] == "SUCCESS"


def test_progress_events_are_throttled(stack: Stack) -> None:
    api, receiver = stack.api, stack.receiver
    body = {**steps_job(steps=40, delay=0.05), "webhook": receiver.url + "/progress", "webhook_events": ["progress"]}
    task_id = api.submit(body)
    assert api.wait(task_id, timeout=60)["status"] == "SUCCESS"
    quiet(stack.db)
    runtime = api.http.get(f"/api/v1/tasks/{task_id}/result/").json()["result"]["metadata"]["runtime"]
    payloads = [verified(request) for request in receiver.to("/progress")]
    # 40 steps changed the progress 40 times; at most two events a second were sent about it.
    assert 2 <= len(payloads) <= 2 * runtime + 3, (len(payloads), runtime)
    assert all(payload["status"] == "PROCESSING" for payload in payloads)
    assert len({(payload["progress"], payload["message"]) for payload in payloads}) == len(payloads)
    assert api.status(task_id)["webhook"]["delivered"] == len(payloads)


def test_a_batch_webhook_gets_the_batch_status(stack: Stack) -> None:
    api, receiver = stack.api, stack.receiver
    items = [{"image": base64.b64encode(png_bytes(SMALL)).decode(), "name": f"item-{index}.png"} for index in range(3)]
    body = {"task_type": "test_steps", "parameters": {"steps": 3, "delay": 0.05}, "items": items,
            "webhook": receiver.url + "/batch", "webhook_events": ["completed"]}  # fmt: skip
    response = api.http.post("/api/v1/batches/", json=body)
    assert response.status_code == 202, response.text
    answer = response.json()

    def delivered() -> dict[str, Any] | None:
        status: dict[str, Any] = api.http.get(f"/api/v1/batches/{answer['batch_id']}/").json()
        return status if status["webhook"]["delivered"] == 1 else None

    status = wait_until(delivered, 60, interval=0.1, what="the batch's webhook")
    assert status["status"] == "SUCCESS" and status["webhook"] == {"delivered": 1, "failed": 0}
    quiet(stack.db)
    [request] = receiver.to("/batch")
    payload = verified(request)
    assert payload["batch_id"] == answer["batch_id"] and payload["status"] == "SUCCESS" and payload["total"] == 3
    assert payload["counts"]["SUCCESS"] == 3 and [item["name"] for item in payload["items"]] == [
        "item-0.png",
        "item-1.png",
        "item-2.png",
    ]
    assert all("webhook" not in api.status(task_id) for task_id in answer["task_ids"])  # the batch's, not each item's


def test_a_chain_webhook_gets_the_chain_status(stack: Stack) -> None:
    api, receiver = stack.api, stack.receiver
    then = [{"task_type": "test_steps", "parameters": {"steps": 3, "delay": 0.05}}]
    body = {**steps_job(steps=3, delay=0.05), "then": then, "webhook": receiver.url + "/chain"}
    chain_id = api.submit(body)
    assert api.wait(chain_id, timeout=60)["status"] == "SUCCESS"
    assert webhook_of(api, chain_id, 1) == {"delivered": 1, "failed": 0}
    quiet(stack.db)
    [request] = receiver.to("/chain")
    payload = verified(request)
    assert payload["task_id"] == chain_id and payload["status"] == "SUCCESS" and len(payload["steps"]) == 2
    assert all("webhook" not in api.status(step["task_id"]) for step in payload["steps"])  # the chain's alone


def test_refused_webhooks_enqueue_nothing(stack: Stack) -> None:
    from api import create_api

    api, db = stack.api, stack.db
    before, queued = job_ids(db), waiting_messages(db, "cpu")
    for url, kind in [("http://10.0.0.1/hook", "private"), ("http://169.254.169.254/", "link-local"),
                      ("http://192.168.1.1:8080/", "private"), ("http://[fe80::1]/", "link-local")]:  # fmt: skip
        response = api.http.post("/api/v1/tasks/submit/", json={**steps_job(steps=1), "webhook": url})
        assert response.status_code == 400, response.text
        assert f"{kind} address" in response.json()["details"]["webhook"][0]
    # With the other fields' problems, in one answer; a batch alike.
    bad = {**steps_job(steps=-1), "webhook": "ftp://example.com/", "webhook_events": ["done"]}
    details = api.http.post("/api/v1/tasks/submit/", json=bad).json()["details"]
    assert set(details) == {"parameters.steps", "webhook", "webhook_events"}
    batch = {"task_type": "test_steps", "items": [{"image": steps_job()["image"]}], "webhook": "http://10.0.0.1/"}
    response = api.http.post("/api/v1/batches/", json=batch)
    assert response.status_code == 400 and "private address" in response.json()["details"]["webhook"][0]

    # A web process without the allow list refuses the loopback receiver; one without a secret, any webhook.
    for settings, message in [
        (Settings(redis_url=stack.url, webhook_secret=SECRET), "127.0.0.1 is a loopback address"),
        (Settings(redis_url=stack.url), "ATELIER_WEBHOOK_SECRET is not set"),
    ]:
        client = JobClient(settings)
        with TestClient(create_api(lambda client=client: client, settings)) as http:
            response = http.post("/api/v1/tasks/submit/", json={**steps_job(steps=1), "webhook": stack.receiver.url})
            assert response.status_code == 400, response.text
            assert message in response.json()["details"]["webhook"][0]
    assert job_ids(db) == before and waiting_messages(db, "cpu") == queued and not db.exists(WATCHED)


def test_a_claimed_delivery_outlives_its_sender(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sender that dies mid-attempt leaves its delivery due again once the lease runs out; every
    key expires with the TTL. (Another database of the stack's server: its worker does not look there.)"""
    import jobs.deliveries

    db = redis.Redis.from_url(stack.url.rsplit("/", 1)[0] + "/3")
    db.flushdb()
    monkeypatch.setattr(jobs.deliveries, "LEASE", 0.5)
    deliveries = DeliveryQueue(db, ttl=30, delays=(0.2,))
    pipe = db.pipeline()
    delivery_id = deliveries.add(pipe, Delivery(url="http://127.0.0.1:9/", body="{}", event="completed", owner="x"))
    pipe.execute()
    assert deliveries.claim(5) == [delivery_id]
    assert deliveries.claim(5) == []  # held by its sender
    time.sleep(0.6)  # ... which died: the lease ran out
    assert deliveries.claim(5) == [delivery_id]
    delivery = deliveries.load(delivery_id)
    assert delivery is not None and delivery.attempts == 0
    assert deliveries.failed(delivery_id, delivery, "HTTP 500") == 0.2
    assert 0 < db.ttl(delivery_key(delivery_id)) <= 30 and 0 < db.ttl(DUE) <= 30
    assert not db.exists("x")  # the owner's record expired: not brought back by the count
    retried = deliveries.load(delivery_id)
    assert retried is not None and retried.attempts == 1
    assert deliveries.failed(delivery_id, retried, "HTTP 500") is None  # no delay left: given up
    assert not db.exists(delivery_key(delivery_id)) and not db.exists(DUE)


def test_every_webhook_key_expires(stack: Stack) -> None:
    for key in stack.db.scan_iter("atelier:*"):
        if key.startswith(b"atelier:webhooks:") or key.startswith(b"atelier:job:"):
            assert stack.db.ttl(key) > 0, key
