"""A message Redis handed to a dying worker's connection is sent again, once, and runs once.

Redis serves a blocked BRPOP as soon as a message arrives; if the worker behind that connection
was SIGKILLed an instant before, and Redis has not yet read the closed socket, the message goes to
the dead connection: it is then in no queue list and not in kombu's ``unacked`` hash.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import redis

from jobs import JobClient
from settings import Settings
from tasks.store import RECONCILER_LOCK, UNACKED, JobStore, broker_lists, job_key, message_job_id, queued_key
from tests.conftest import png_bytes
from tests.integration.conftest import Api
from tests.integration.test_jobs import SMALL, steps_job
from tests.support.operations import executions_key
from tests.support.stack import Worker, wait_until, waiting_messages


def in_broker(db: redis.Redis, job_id: str) -> bool:
    """Whether the job's message is in a cpu queue list or in kombu's unacked hash."""
    ids = {message_job_id(json.loads(raw)) for name in broker_lists("cpu") for raw in db.lrange(name, 0, -1)}
    ids |= {message_job_id(json.loads(raw)[0]) for raw in db.hvals(UNACKED)}
    return job_id in ids


def test_a_job_whose_message_never_reached_a_queue_is_sent_again_once(
    api: Api, workers: dict[str, Worker], redis_client: Any
) -> None:
    """The end state of the race, built exactly: a record, queued, and no message anywhere."""
    from jobs import get_client

    client = get_client()
    job_id = str(uuid.uuid4())
    record = {"prompt": "lost-in-transit", "parameters": {"steps": 1, "delay": 0}}
    client.store.create(job_id, "test_steps", "cpu", {"image": png_bytes(SMALL)}, record)
    created = time.time() - 60  # accepted a minute ago: past the publish window
    redis_client.zadd(queued_key("cpu"), {job_id: created})
    assert not in_broker(redis_client, job_id)

    assert api.wait(job_id, timeout=90)["status"] == "SUCCESS"
    assert redis_client.get(executions_key("lost-in-transit")) == b"1"
    assert redis_client.hget(job_key(job_id), "attempts") == b"1"
    assert redis_client.hexists(job_key(job_id), "resent")
    # Once sent again, a job is never sent again: a second claim (another reconciler) loses.
    assert not client.store.claim_resend(job_id, "again")


def test_a_job_lost_in_transit_a_second_time_fails_with_a_reason(api: Api, redis_client: Any) -> None:
    """Sent again once and lost again: it ends FAILURE rather than waiting queued until it expires."""
    from jobs import get_client

    client = get_client()
    job_id = str(uuid.uuid4())
    record = {"prompt": "lost-twice", "parameters": {"steps": 1, "delay": 0}}
    client.store.create(job_id, "test_steps", "cpu", {"image": png_bytes(SMALL)}, record)
    assert client.store.claim_resend(job_id, "sent again: its message was lost in transit")  # and lost again
    redis_client.zadd(queued_key("cpu"), {job_id: time.time() - 60})

    failed = api.wait(job_id, timeout=90)
    assert failed["status"] == "FAILURE"
    assert failed["message"].startswith("Lost in transit"), failed
    assert redis_client.get(executions_key("lost-twice")) is None  # it never ran
    assert redis_client.zscore(queued_key("cpu"), job_id) is None  # and no longer counts as queued


def test_only_one_reconciler_may_send_a_job_again(redis_client: Any) -> None:
    store = JobStore(redis_client, 60)
    job_id = str(uuid.uuid4())
    store.create(job_id, "test_steps", "cpu", {"image": png_bytes(SMALL)}, {"prompt": "claim"})
    try:
        assert [store.claim_resend(job_id, "sent again") for _ in range(3)] == [True, False, False]
        assert redis_client.hget(job_key(job_id), "note") == b"sent again"
        assert not store.claim_resend(str(uuid.uuid4()), "sent again")  # no record: nothing to send
    finally:
        store.delete(job_id, "cpu")


def test_a_queued_message_or_a_fresh_job_is_not_taken_for_lost(redis_client: Any, redis_url: str) -> None:
    """Jobs whose message waits in the queue, or that are younger than the grace, are left alone."""
    url = redis_url.rsplit("/", 1)[0] + "/7"
    db = redis.Redis.from_url(url)
    db.flushdb()
    client = JobClient(Settings(redis_url=url))
    queued = client.submit(steps_job(steps=1, delay=0)).task_id  # no worker on db 7: it stays queued
    fresh = str(uuid.uuid4())
    client.store.create(fresh, "test_steps", "cpu", {"image": png_bytes(SMALL)}, {})  # no message, but new
    db.zadd(queued_key("cpu"), {queued: time.time() - 60})
    lost = str(uuid.uuid4())
    client.store.create(lost, "test_steps", "cpu", {"image": png_bytes(SMALL)}, {})
    db.zadd(queued_key("cpu"), {lost: time.time() - 60})
    assert client.store.find_unsent(("gpu", "cpu"), 10) == []  # first look: only noted
    assert db.zrange("atelier:unsent", 0, -1) == [lost.encode()]
    db.zadd("atelier:unsent", {lost: time.time() - 11})  # as if that look was 11 s ago
    assert client.store.find_unsent(("gpu", "cpu"), 10) == [lost]
    db.flushdb()


def test_jobs_submitted_as_a_worker_is_killed_are_not_lost(redis_url: str, artifacts: Path) -> None:
    """The real race: SIGKILL a worker blocked in BRPOP, submit 1 ms later; repeated a few times."""
    url = redis_url.rsplit("/", 1)[0] + "/8"
    db = redis.Redis.from_url(url)
    db.flushdb()
    client = JobClient(Settings(redis_url=url))
    log = artifacts / "worker-lost-in-transit.log"
    rounds, per_round = 4, 3
    jobs: dict[str, str] = {}  # task id → marker
    lost: list[str] = []
    # No reconciler runs during the rounds (the test holds its lock): one sending a lost job again
    # just as a victim is killed would lose it a second time. The rescuer reconciles at the end.
    db.set(RECONCILER_LOCK, "test", ex=600)
    for round_ in range(rounds):
        victim = Worker("cpu", f"victim-{round_}", env={"REDIS_URL": url}, log=log).wait_ready(db)

        def idle_in_brpop() -> bool:  # earlier rounds' jobs done: the worker waits on an empty queue
            idle = waiting_messages(db, "cpu") == 0 and db.zcard("atelier:running") == 0 and not db.hlen(UNACKED)
            return idle and any(c.get("cmd") == "brpop" and c.get("db") == "8" for c in db.client_list())

        wait_until(idle_in_brpop, 30, what="the worker to block in BRPOP on an empty queue")
        main = psutil.Process(victim.process.pid)
        for process in [*main.children(recursive=True), main]:
            process.send_signal(signal.SIGKILL)
        time.sleep(0.001)
        for n in range(per_round):
            marker = f"transit-{round_}-{n}"
            jobs[client.submit(steps_job(steps=1, delay=0, marker=marker)).task_id] = marker
        victim.process.wait(10)
        time.sleep(0.3)
        lost += [job_id for job_id in list(jobs)[-per_round:] if not in_broker(db, job_id)]
    print(f"\nlost in transit: {len(lost)} of {len(jobs)} jobs submitted 1 ms after a SIGKILL")

    db.delete(RECONCILER_LOCK)
    rescuer = Worker("cpu", "rescuer", env={"REDIS_URL": url}, log=log).wait_ready(db)
    try:
        wait_until(
            lambda: all(client.status(job_id).status == "SUCCESS" for job_id in jobs), 90, interval=0.5,
            what="every job to succeed",
        )  # fmt: skip
        runs = {marker: db.get(executions_key(marker)) for marker in jobs.values()}
        resent = {job_id for job_id in jobs if db.hexists(job_key(job_id), "resent")}
    finally:
        rescuer.stop()
        db.flushdb()
    assert set(runs.values()) == {b"1"}, runs  # each ran exactly once
    assert resent == set(lost)  # sent again exactly the ones that were lost, no others
