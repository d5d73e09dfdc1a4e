"""Chains on the worker side: a finished step sends the next one; the reconciler finishes what a dead
worker left between two steps.

Every step is a job created at submit. The first is queued; each later one waits (unqueued, marked
``waiting``) until the step before it succeeds: then that step's output is copied into its input
key, it takes its place in its queue, and its message is sent, on its own operation's queue.
Images pass between steps through Redis keys only.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, cast

from tasks.states import JobState
from tasks.store import CHAINS, JobStore, chain_key, job_key

log = logging.getLogger(__name__)
STALLED_AFTER = 10.0  # seconds a succeeded step's successor may wait before the reconciler sends it


def chain_ids(store: JobStore, chain_id: str) -> list[str]:
    raw = store.redis.hget(chain_key(chain_id), "ids")
    return json.loads(raw) if raw else []


def send_next(store: JobStore, celery: Any, record: dict[str, str], job_id: str) -> None:
    """After step ``job_id`` of a chain succeeded and stored its output: send the next step (once)."""
    from tasks.run import send_again

    ids = chain_ids(store, record["chain"])
    step = int(record["step"])
    if step >= len(ids):
        store.redis.zrem(CHAINS, record["chain"])  # the last step: nothing more to send
        return
    following = ids[step]
    next_record = store.record(following)
    if next_record is None:
        log.warning("Chain %s: step %d expired before it could run", record["chain"], step + 1)
        return
    answer = store.advance(job_id, following, next_record)
    if answer == "OK":
        send_again(celery, following, next_record)


def history(store: JobStore, record: dict[str, str]) -> list[dict[str, Any]]:
    """The steps of the job's chain up to and including it, as its PNG records them."""
    ids = chain_ids(store, record["chain"])[: int(record["step"])]
    pipe = store.redis.pipeline(transaction=False)
    for step_id in ids:
        pipe.hmget(job_key(step_id), "task_type", "parameters", "prompt")
    steps = []
    for task_type, parameters, prompt in pipe.execute():
        step: dict[str, Any] = {"operation": (task_type or b"").decode()}
        step["parameters"] = json.loads(parameters) if parameters else {}
        if prompt and json.loads(prompt) is not None:
            step["prompt"] = json.loads(prompt)
        steps.append(step)
    return steps


def reconcile_chains(store: JobStore, celery: Any) -> None:
    """For each chain still running: send the next step of a step that succeeded a while ago but whose
    worker died before sending it; end the steps after a failed or cancelled one; forget ended chains."""
    now = time.time()
    store.redis.zremrangebyscore(CHAINS, "-inf", now - store.ttl)
    for raw_id in cast(list[bytes], store.redis.zrange(CHAINS, 0, -1)):
        chain_id = raw_id.decode()
        ids = chain_ids(store, chain_id)
        pipe = store.redis.pipeline(transaction=False)
        for step_id in ids:
            pipe.hmget(job_key(step_id), "outcome", "waiting", "finished")
        states = [(outcome and outcome.decode(), waiting, finished) for outcome, waiting, finished in pipe.execute()]
        if not ids or _settle(store, celery, chain_id, ids, states, now):
            store.redis.zrem(CHAINS, chain_id)


def _settle(store: JobStore, celery: Any, chain_id: str, ids: list[str], states: list[Any], now: float) -> bool:
    """One chain's reconciliation; True once nothing more can happen to it."""
    for index, (outcome, waiting, _) in enumerate(states):
        if outcome in (JobState.FAILURE, JobState.REVOKED):
            _drop_rest(store, celery, ids[index + 1 :], index + 1, outcome)
            return True
        if outcome == JobState.SUCCESS:
            continue
        previous = states[index - 1] if index else None
        if waiting is not None and previous is not None and now - float(previous[2] or now) > STALLED_AFTER:
            record = store.record(ids[index - 1])  # it succeeded and stored its output a while ago
            if record is not None:
                log.warning("Chain %s: step %d was never sent; sending it", chain_id, index + 1)
                send_next(store, celery, record, ids[index - 1])
        return False
    return True  # every step succeeded


def _drop_rest(store: JobStore, celery: Any, rest: list[str], step: int, outcome: str) -> None:
    """The steps after a failed or cancelled step never run: they end REVOKED, saying why."""
    reason = "failed" if outcome == JobState.FAILURE else "was cancelled"
    for step_id in rest:
        if store.claim_outcome(step_id, JobState.REVOKED) is None:
            store.redis.hset(job_key(step_id), "note", f"Not run: step {step} {reason}")
            celery.backend.mark_as_revoked(step_id, reason=f"step {step} {reason}")
