"""Which webhook events have happened: the notifier reads the status of every job, chain and batch
that has a webhook, as a client polling it would, and queues a delivery for each event asked for.

Nothing on the paths that change a job's state needs to know about webhooks: whatever a client can
see (a start, progress, the end, a cancel, a retry after a lost worker) the notifier sees too.
``jobs.deliveries.WATCHED`` lists them; an id leaves it with its final state, or when its record
expired.

Events: ``start`` (first seen running), ``progress`` (a new progress or message, at most one per
PROGRESS_EVERY seconds per job, the latest state each time) and ``completed`` (a final state). A
job that starts and ends between two looks (LOOK_EVERY) goes straight to ``completed``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

import redis
from celery import Celery

from jobs.batches import BatchTracker
from jobs.deliveries import BATCH, CHAIN, JOB, WATCHED, Delivery, DeliveryQueue, owner_key
from jobs.errors import BatchNotFound, JobNotFound
from jobs.follow import Tracker
from jobs.status import describe, is_queued
from tasks.states import JobState
from tasks.store import PREFIX, JobStore, job_key

NOTIFIER_LOCK = f"{PREFIX}:webhooks:notifier"
LOOK_EVERY = 0.25  # seconds between two looks at the watched statuses
PROGRESS_EVERY = 0.5  # at most two progress events a second per job or batch
LOCK_FOR = 3.0  # seconds the notifier's lock outlives its holder's last look
# Take or keep the notifier's lock: one notifier at a time, whichever worker holds it.
TAKE_LOCK = """
local holder = redis.call('get', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Watch:
    """A watched job, chain or batch: its webhook, and what was sent of it."""

    url: str
    events: tuple[str, ...]
    started: bool = False
    sent: tuple[int, str] | None = None  # (progress, message) of the last start or progress event
    at: float = 0.0  # when that was sent

    @classmethod
    def loads(cls, raw: bytes) -> Watch:
        data = json.loads(raw)
        sent = data.get("sent")
        return cls(data["url"], tuple(data["events"]), data.get("started", False), tuple(sent) if sent else None,
                   data.get("at", 0.0))  # fmt: skip

    def dumps(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class Seen:
    """What the notifier saw of a job, chain or batch: its state, (progress, message) and status JSON."""

    state: JobState
    look: tuple[int, str] = (0, "")
    body: dict[str, Any] = field(default_factory=dict)


def decide(watch: Watch, seen: Seen, now: float) -> tuple[str | None, Watch]:
    """(the event to send, if any, and the watch updated) for what the notifier sees now."""
    if seen.state.finished:
        return ("completed" if "completed" in watch.events else None), watch
    if seen.state != JobState.PROCESSING:
        return None, watch
    if not watch.started:
        watch = replace(watch, started=True)
        if "start" in watch.events:
            return "start", replace(watch, sent=seen.look, at=now)
    due = watch.sent is None or now - watch.at >= PROGRESS_EVERY
    if "progress" in watch.events and seen.look != watch.sent and due:
        return "progress", replace(watch, sent=seen.look, at=now)
    return None, watch


def encode(body: dict[str, Any]) -> str:
    """A status as the API writes it (compact UTF-8 JSON)."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class Notifier:
    """Looks at the watched jobs, chains and batches, and queues their events' deliveries."""

    def __init__(self, store: JobStore, celery: Celery, deliveries: DeliveryQueue, holder: str) -> None:
        self.store, self.celery, self.deliveries, self.holder = store, celery, deliveries, holder
        self.batches = BatchTracker(celery, store)
        self.tracker = Tracker(celery, store)  # a chain's status, as the client reads it
        self._take_lock = store.redis.register_script(TAKE_LOCK)

    def look(self) -> None:
        """One look, by whichever worker holds the lock; nothing at all (no key written) while
        nothing is watched."""
        redis_client: redis.Redis = self.store.redis
        if not redis_client.exists(WATCHED):
            return
        if not self._take_lock(keys=[NOTIFIER_LOCK], args=[self.holder, int(LOCK_FOR * 1000)]):
            return
        watched = {
            key.decode(): Watch.loads(value)
            for key, value in cast(dict[bytes, bytes], redis_client.hgetall(WATCHED)).items()
        }
        seen = self._jobs([name for name in watched if name.startswith(JOB + ":")])
        seen.update(self._batches([name for name in watched if name.startswith(BATCH + ":")]))
        seen.update(self._chains([name for name in watched if name.startswith(CHAIN + ":")]))
        now = time.time()
        pipe = redis_client.pipeline(transaction=True)
        for name, current in watched.items():
            self._follow(pipe, name, current, seen.get(name), now)
        pipe.expire(WATCHED, self.store.ttl)
        pipe.execute()

    def _follow(self, pipe: Any, name: str, current: Watch, seen: Seen | None, now: float) -> None:
        """Add to ``pipe`` the event's delivery, if any, and what the watch becomes."""
        if seen is None:  # expired, or gone: nothing more to tell
            pipe.hdel(WATCHED, name)
            return
        event, updated = decide(current, seen, now)
        if event is not None:
            owner = owner_key(*name.split(":", 1))
            self.deliveries.add(pipe, Delivery(url=current.url, body=encode(seen.body), event=event, owner=owner))
        if seen.state.finished:
            pipe.hdel(WATCHED, name)
        elif updated != current:
            pipe.hset(WATCHED, name, updated.dumps())

    def _jobs(self, names: list[str]) -> dict[str, Seen | None]:
        """What each watched job looks like, in one round trip (a queued job's place is not read:
        no event is about it)."""
        if not names:
            return {}
        backend = self.celery.backend
        pipe = self.store.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(job_key(name.partition(":")[2]))
            pipe.get(backend.get_key_for_task(name.partition(":")[2]))
        answers = pipe.execute()
        seen: dict[str, Seen | None] = {}
        for name, raw, raw_meta in zip(names, answers[::2], answers[1::2], strict=True):
            record = {key.decode(): value.decode() for key, value in raw.items()}
            meta = json.loads(raw_meta) if raw_meta else {"status": JobState.PENDING, "result": None}
            if "task_type" not in record:
                seen[name] = None
            elif is_queued(record, meta):
                seen[name] = Seen(JobState.PENDING)
            else:
                status = describe(name.partition(":")[2], record, meta)
                seen[name] = Seen(status.status, (status.progress, status.message), status.as_dict())
        return seen

    def _batches(self, names: list[str]) -> dict[str, Seen | None]:
        seen: dict[str, Seen | None] = {}
        for name in names:
            try:
                status = self.batches.status(name.partition(":")[2])
            except BatchNotFound:
                seen[name] = None
                continue
            seen[name] = Seen(status.status, (status.progress, status.message), status.model_dump(mode="json"))
        return seen

    def _chains(self, names: list[str]) -> dict[str, Seen | None]:
        seen: dict[str, Seen | None] = {}
        for name in names:
            try:
                status = self.tracker.status(name.partition(":")[2])
            except JobNotFound:
                seen[name] = None
                continue
            seen[name] = Seen(status.status, (status.progress, status.message), status.as_dict())
        return seen
