"""A job's end claimed, its output stored and its Celery state stored and published: one script."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from tasks.claims import JobClaims, Output
from tasks.store import JobStore, output_key

TTL = 60


def test_the_end_that_claims_a_success_stores_and_publishes_its_state_once(redis_client: Any) -> None:
    store, claims = JobStore(redis_client, TTL), JobClaims(redis_client, TTL)
    job_id, state_key = str(uuid.uuid4()), f"celery-task-meta-test-{uuid.uuid4()}"
    store.create(job_id, "test_steps", "claims-test", {}, {})
    assert claims.start(job_id, "worker#1").state == "OK"
    listener = redis_client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(state_key)
    state = json.dumps({"status": "SUCCESS", "result": {"bytes": 3}, "task_id": job_id})

    output = Output(b"png", "test_steps", "claims-test", 0.1, state_key, state)
    assert claims.finish(job_id, "SUCCESS", "worker#1:1", output) is None
    assert redis_client.get(state_key) == state.encode() and 0 < redis_client.ttl(state_key) <= TTL
    assert redis_client.get(output_key(job_id)) == b"png"
    heard = [listener.get_message(timeout=1.0) for _ in range(2)]
    assert [message["data"] for message in heard if message] == [state.encode()]  # published once

    later = Output(b"other", "test_steps", "claims-test", 0.1, state_key, json.dumps({"status": "SUCCESS"}))
    assert claims.finish(job_id, "SUCCESS", "worker#2:2", later) == "SUCCESS"  # another attempt: too late
    assert claims.finish(job_id, "SUCCESS", "worker#1:1", later) is None  # this attempt's retry: already done
    time.sleep(0.1)
    assert listener.get_message(timeout=0.2) is None  # neither wrote nor published anything
    assert redis_client.get(state_key) == state.encode() and redis_client.get(output_key(job_id)) == b"png"
    listener.close()
