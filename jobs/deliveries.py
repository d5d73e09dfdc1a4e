"""Webhooks in Redis: what is watched, and the deliveries waiting to be sent (so that no worker's
death loses one).

- ``atelier:webhooks:watched``: job:<id>, batch:<id> or chain:<id> → JSON (the webhook's URL and events, and
  what the notifier sent of it), from submit until the job or batch ends or expires.
- ``atelier:webhooks:delivery:<webhook-id>``: one delivery (JSON: URL, body, event, the record whose
  counters it bumps, attempts made), with the result TTL.
- ``atelier:webhooks:due``: webhook-id → when it is due. A sender claims a due delivery by moving it
  a lease into the future, and removes it only once it is settled: a sender that dies mid-attempt
  leaves it to be claimed again when the lease runs out (same webhook-id, same body).

Outcomes are counted into the job's (or batch's) record for its status: delivered, failed attempts
and the last error, and only while that record exists (an expired job is not brought back).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import redis

from jobs.status import WEBHOOK_DELIVERED, WEBHOOK_ERROR, WEBHOOK_FAILED
from jobs.webhooks import WebhookRequest
from tasks.store import PREFIX, batch_key, chain_key, job_key

WATCHED = f"{PREFIX}:webhooks:watched"
DUE = f"{PREFIX}:webhooks:due"
JOB, BATCH, CHAIN = "job", "batch", "chain"  # the kinds of watched ids
LEASE = 60.0  # seconds a claimed delivery is held: longer than an attempt with its redirects can take

# A claim: the due deliveries, each moved a lease into the future (its sender settles it before).
CLAIM = """
local due = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do redis.call('zadd', KEYS[1], ARGV[3], id) end
if #due > 0 then redis.call('expire', KEYS[1], ARGV[4]) end
return due
"""
# Count an outcome into a job's or batch's record, unless it expired (a write would recreate it).
COUNT = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
redis.call('hincrby', KEYS[1], ARGV[1], 1)
if ARGV[2] ~= '' then redis.call('hset', KEYS[1], ARGV[3], ARGV[2]) end
return 1
"""


def watch(pipe: Any, kind: str, owner_id: str, webhook: WebhookRequest, ttl: int) -> None:
    """Add to ``pipe`` the writes that have the notifier watch a new job or batch (``kind``)."""
    pipe.hset(WATCHED, f"{kind}:{owner_id}", json.dumps(webhook.as_record()))
    pipe.expire(WATCHED, ttl)


def watch_chain(client: redis.Redis, chain_id: str, webhook: WebhookRequest, ttl: int) -> None:
    """Give a chain just enqueued its webhook (on its record, for its status) and watch it. Its
    first look comes after this at the earliest: no event is missed, a start is only seen later."""
    pipe = client.pipeline(transaction=True)
    pipe.hset(chain_key(chain_id), "webhook", json.dumps(webhook.as_record()))
    watch(pipe, CHAIN, chain_id, webhook, ttl)
    pipe.execute()


def owner_key(kind: str, owner_id: str) -> str:
    """The Redis record of a watched job, batch or chain: where its deliveries are counted."""
    return {JOB: job_key, BATCH: batch_key, CHAIN: chain_key}[kind](owner_id)


def delivery_key(delivery_id: str) -> str:
    return f"{PREFIX}:webhooks:delivery:{delivery_id}"


@dataclass(frozen=True)
class Delivery:
    """One event for one receiver: its body is fixed when the event happens; every attempt is
    signed afresh with the same webhook-id."""

    url: str
    body: str
    event: str
    owner: str  # the Redis key of the job's or batch's record
    attempts: int = 0


class DeliveryQueue:
    """Add deliveries, claim the due ones, settle each attempt (retried after ``delays`` in turn)."""

    def __init__(self, client: redis.Redis, ttl: int, delays: Sequence[float]) -> None:
        self.redis, self.ttl, self.delays = client, ttl, tuple(delays)
        self._claim = client.register_script(CLAIM)
        self._count = client.register_script(COUNT)

    def add(self, pipe: Any, delivery: Delivery) -> str:
        """Add to ``pipe`` the writes that queue ``delivery``, due now; its webhook-id."""
        delivery_id = f"msg_{uuid.uuid4().hex}"
        pipe.set(delivery_key(delivery_id), json.dumps(asdict(delivery)), ex=self.ttl)
        pipe.zadd(DUE, {delivery_id: time.time()})
        pipe.expire(DUE, self.ttl)
        return delivery_id

    def claim(self, limit: int) -> list[str]:
        """Up to ``limit`` due deliveries, held for LEASE seconds by the caller."""
        if limit <= 0:
            return []
        now = time.time()
        claimed = self._claim(keys=[DUE], args=[now, limit, now + LEASE, self.ttl])
        return [delivery_id.decode() for delivery_id in cast(list[bytes], claimed)]

    def load(self, delivery_id: str) -> Delivery | None:
        """The delivery, or None (and its due entry dropped) when it expired."""
        raw = cast(bytes | None, self.redis.get(delivery_key(delivery_id)))
        if raw is None:
            self.redis.zrem(DUE, delivery_id)
            return None
        return Delivery(**json.loads(raw))

    def delivered(self, delivery_id: str, delivery: Delivery) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(DUE, delivery_id)
        pipe.delete(delivery_key(delivery_id))
        self._count(keys=[delivery.owner], args=[WEBHOOK_DELIVERED, "", WEBHOOK_ERROR], client=pipe)
        pipe.execute()

    def failed(self, delivery_id: str, delivery: Delivery, error: str) -> float | None:
        """Count a failed attempt; schedule the next one (its delay returned) or give up (None)."""
        attempts = delivery.attempts + 1
        total = len(self.delays) + 1
        delay = self.delays[attempts - 1] if attempts < total else None
        pipe = self.redis.pipeline(transaction=True)
        if delay is None:
            note = f"{error} (attempt {attempts} of {total}; given up)"
            pipe.zrem(DUE, delivery_id)
            pipe.delete(delivery_key(delivery_id))
        else:
            note = f"{error} (attempt {attempts} of {total}; trying again in {delay:g} s)"
            retry = json.dumps({**asdict(delivery), "attempts": attempts})
            pipe.set(delivery_key(delivery_id), retry, ex=self.ttl, xx=True)  # not if it expired meanwhile
            pipe.zadd(DUE, {delivery_id: time.time() + delay})
            pipe.expire(DUE, self.ttl)
        self._count(keys=[delivery.owner], args=[WEBHOOK_FAILED, note, WEBHOOK_ERROR], client=pipe)
        pipe.execute()
        return delay

    def pending(self) -> bool:
        return bool(self.redis.exists(DUE))
