"""Where a job lives in Redis: its record, its images, queue order, run times, live workers.

Every per-job key carries the result TTL, so a job and its images expire together.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import redis

PREFIX = "atelier"
WORKER_STALE_AFTER = 10.0  # seconds without a heartbeat before a worker counts as gone
RUNTIME_SAMPLES = 20


# Both scripts leave an expired job alone: writing to its hash would recreate a partial record.
CLAIM_OUTCOME = """
if redis.call('exists', KEYS[1]) == 0 then return 'EXPIRED' end
if redis.call('hsetnx', KEYS[1], 'outcome', ARGV[1]) == 1 then return '' end
return redis.call('hget', KEYS[1], 'outcome')
"""
# A job is sent again once: the first reconciler to set 'resent' (on a live, unfinished record) wins.
CLAIM_RESEND = """
if redis.call('exists', KEYS[1]) == 0 or redis.call('hexists', KEYS[1], 'outcome') == 1 then return 0 end
if redis.call('hsetnx', KEYS[1], 'resent', ARGV[1]) == 0 then return 0 end
redis.call('hset', KEYS[1], 'note', ARGV[2])
redis.call('zrem', KEYS[2], ARGV[3])
return 1
"""
# A fixed window per client that opens with its first submission: count, and the ms left in it.
COUNT_SUBMISSION = """
local count = redis.call('incr', KEYS[1])
local left = redis.call('pttl', KEYS[1])
if left < 0 then redis.call('pexpire', KEYS[1], ARGV[1]); left = tonumber(ARGV[1]) end
return {count, left}
"""
# A batch lives as long as its most recently touched item; a chain's steps and record live as long
# as its most recently touched step (a step waiting for the one before must not expire meanwhile).
# touch_job(key, ttl, job prefix, batch prefix, chain prefix): a Lua function the scripts that keep a
# job alive share (here and in tasks/claims.py).
TOUCH_JOB = """
local function touch(key, ttl)
  redis.call('expire', key, ttl)
  local inputs = cjson.decode(redis.call('hget', key, 'inputs') or '[]')
  for _, field in ipairs(inputs) do redis.call('expire', key .. ':input:' .. field, ttl) end
end
local function touch_job(key, ttl, jobs, batches, chains)
  touch(key, ttl)
  local batch = redis.call('hget', key, 'batch')
  if batch then redis.call('expire', batches .. batch, ttl) end
  local chain = redis.call('hget', key, 'chain')
  if chain and redis.call('expire', chains .. chain, ttl) == 1 then
    for _, step in ipairs(cjson.decode(redis.call('hget', chains .. chain, 'ids') or '[]')) do
      if redis.call('exists', jobs .. step) == 1 then touch(jobs .. step, ttl) end
    end
  end
end
"""
TOUCH = (
    TOUCH_JOB
    + """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
if ARGV[3] ~= '' then redis.call('hset', KEYS[1], ARGV[3], ARGV[4]) end
touch_job(KEYS[1], ARGV[1], ARGV[2], ARGV[5], ARGV[6])
return 1
"""
)
# How many of an owner's jobs (of one lane) still wait in a queue, counted up to ARGV[1]: the levels
# stop there, so a long queue costs no more than a short one. Jobs that left the queue are forgotten.
WAITING = """
local found, start = 0, 0
while found < tonumber(ARGV[1]) do
  local ids = redis.call('zrange', KEYS[1], start, start + 15)
  if #ids == 0 then break end
  local removed = 0
  for _, id in ipairs(ids) do
    if redis.call('zscore', KEYS[2], id) then
      found = found + 1
    else
      redis.call('zrem', KEYS[1], id)
      removed = removed + 1
    end
  end
  start = start + #ids - removed
end
return found
"""
# A chain's next step, once (its 'waiting' mark is the claim): the previous output becomes its input
# and it takes its place in its queue's order. The caller then sends its message.
ADVANCE = """
if redis.call('exists', KEYS[3]) == 0 then return 'EXPIRED' end
if redis.call('hexists', KEYS[3], 'outcome') == 1 then return 'ENDED' end
if redis.call('hexists', KEYS[3], 'waiting') == 0 then return 'SENT' end
local output = redis.call('get', KEYS[2])
if not output then return 'NO_OUTPUT' end
redis.call('hdel', KEYS[3], 'waiting')
redis.call('set', KEYS[4], output, 'EX', ARGV[2])
redis.call('zadd', KEYS[5], ARGV[1], ARGV[3])
return 'OK'
"""


@dataclass(frozen=True)
class JobMeta:
    """Where a new job belongs: its owner, its level in its queue, its batch, its place in a chain."""

    owner: str | None = None
    level: int = 0
    batch_id: str | None = None
    link: ChainLink | None = None

    def fields(self) -> dict[str, str | float]:
        fields: dict[str, str | float] = {}
        if self.owner is not None:
            fields["owner"] = self.owner
        if self.batch_id is not None:
            fields["batch"] = self.batch_id
        if self.link is not None:
            fields |= self.link.fields()
        return fields


@dataclass(frozen=True)
class ChainLink:
    """A job's place in a chain: step ``step`` (1-based) of ``of`` in ``chain``; ``awaits`` names the
    input the previous step's output fills (None for the first step)."""

    chain: str
    step: int
    awaits: str | None = None
    of: int = 1

    def fields(self) -> dict[str, str | float]:
        fields: dict[str, str | float] = {"chain": self.chain, "step": self.step, "of": self.of}
        if self.awaits is not None:
            fields |= {"waiting": 1, "awaits": self.awaits}
        return fields


def job_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def input_key(job_id: str, field: str) -> str:
    return f"{PREFIX}:job:{job_id}:input:{field}"


def output_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:output"


def queued_key(queue: str) -> str:
    return f"{PREFIX}:queued:{queue}"


def batch_key(batch_id: str) -> str:
    return f"{PREFIX}:batch:{batch_id}"


def chain_key(chain_id: str) -> str:
    return f"{PREFIX}:chain:{chain_id}"


CHAINS = f"{PREFIX}:chains"  # chain id → created, while the chain may still need a step sent


def owner_queued_key(queue: str, owner: str, batched: bool) -> str:
    return f"{PREFIX}:waiting:{queue}:{'batch' if batched else 'single'}:{owner}"


def rate_key(client: str) -> str:
    return f"{PREFIX}:rate:{client}"


def runtimes_key(task_type: str) -> str:
    return f"{PREFIX}:runtimes:{task_type}"


def workers_key(queue: str) -> str:
    return f"{PREFIX}:workers:{queue}"


RUNNING = f"{PREFIX}:running"  # job id → start time, while a worker runs it
PROCESSES = f"{PREFIX}:worker-processes"  # "host#pid" of each worker main process → last heartbeat
RECONCILER_LOCK = f"{PREFIX}:reconciler"
UNSENT = f"{PREFIX}:unsent"  # job id → when the reconciler first found its message nowhere in Redis
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"  # kombu's Redis transport's own keys
# kombu's Redis transport keeps a queue in one list per priority ("cpu", "cpu\x06\x161", ... "cpu\x06\x169")
# and a worker pops from them in that order (0 first). The order of a queue lives there, in Redis:
# a job's priority (its "level") is how many jobs its owner already has waiting in that queue, so
# owners take turns (one owner's 300 waiting jobs hold another's new job back by one job per worker
# process at most); single jobs take levels 0-6 and batch items 7-9, so batch items never hold up a
# single job. Past the last level of its lane a job waits in submit order.
PRIORITY_SEP, PRIORITY_STEPS = "\x06\x16", tuple(range(10))
SINGLE_LEVELS, BATCH_LEVELS = (0, 6), (7, 9)
BATCH_PRIORITY = BATCH_LEVELS[0]  # a batch item's level when its owner has none waiting
LEVEL_SPAN = 1e10  # the queued sets' scores: level × LEVEL_SPAN + submit time, the order workers take them in


def broker_lists(queue: str) -> list[str]:
    """The Redis lists kombu keeps ``queue``'s waiting messages in, one per priority step."""
    return [broker_list(queue, step) for step in PRIORITY_STEPS]


def broker_list(queue: str, priority: int) -> str:
    """The list kombu keeps ``queue``'s messages of ``priority`` in (as its ``_q_for_pri`` does)."""
    step = max(step for step in PRIORITY_STEPS if step <= max(0, priority))
    return queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}"


def level_for(waiting: int, batched: bool) -> int:
    """The level of a job whose owner has ``waiting`` jobs of its lane waiting in its queue already."""
    first, last = BATCH_LEVELS if batched else SINGLE_LEVELS
    return min(first + max(0, waiting), last)


def record_level(record: dict[str, str]) -> int:
    """A job's level from its record (older records: their lane's first)."""
    if "level" in record:
        return int(record["level"])
    return BATCH_LEVELS[0] if "batch" in record else SINGLE_LEVELS[0]


def queue_score(created: float, level: int) -> float:
    """A queued job's score in its queue's order (what ``zrank`` reads as its position)."""
    return level * LEVEL_SPAN + created


def queued_before(pipe: Any, queue: str, cutoff: float) -> None:
    """Add to ``pipe`` the reads of ``queue``'s jobs queued before ``cutoff``, at every level."""
    for level in PRIORITY_STEPS:
        pipe.zrangebyscore(queued_key(queue), level * LEVEL_SPAN, level * LEVEL_SPAN + cutoff)


def message_priority(message: Any) -> int:
    try:
        return int(message["properties"]["priority"])
    except (KeyError, TypeError, ValueError):
        return 0


def message_job_id(message: Any) -> str | None:
    """The task id of a kombu message (as decoded from JSON), or None if it is not a task message."""
    if not isinstance(message, dict):
        return None
    job_id = (message.get("headers") or {}).get("id") or (message.get("properties") or {}).get("correlation_id")
    return job_id if isinstance(job_id, str) else None


def _decoded(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


@lru_cache(maxsize=8)
def connect(url: str) -> redis.Redis:
    """One connection pool per URL and process. Short timeouts: a dead Redis answers fast."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=0.5, socket_timeout=1.0, health_check_interval=15, retry_on_timeout=False
    )


class QueueRecovery:
    """Putting jobs back in their queue: after a worker died or stopped, after a lost message.
    (Part of :class:`JobStore`, which brings ``redis`` and the ``_claim_resend`` script.)"""

    redis: redis.Redis
    ttl: int
    _claim_resend: Any

    def running_jobs(self) -> list[str]:
        return [job_id.decode() for job_id in cast(list[bytes], self.redis.zrange(RUNNING, 0, -1))]

    def hand_back(self, job_id: str, queue: str, note: str, meta_key: Any) -> None:
        """Queue a running job again, at its original place, because its worker is stopping: not
        an attempt lost to a dead worker, so its attempt is given back too."""
        score = self._original_place(job_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(RUNNING, job_id)
        pipe.hincrby(job_key(job_id), "attempts", -1)
        pipe.hset(job_key(job_id), "note", note)
        pipe.delete(meta_key)  # its PROCESSING state: the job reads as queued again
        pipe.zadd(queued_key(queue), {job_id: score})
        pipe.execute()

    def requeue(self, job_id: str, queue: str, note: str) -> None:
        """Put a job whose worker died back in the queue order, at its original place."""
        score = self._original_place(job_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(queued_key(queue), {job_id: score})
        pipe.hset(job_key(job_id), "note", note)
        pipe.execute()

    def _original_place(self, job_id: str) -> float:
        raw = cast(dict[bytes, bytes], self.redis.hgetall(job_key(job_id)))
        record = {key.decode(): value.decode() for key, value in raw.items()}
        return queue_score(float(record.get("created") or time.time()), record_level(record))

    def restore_unstarted(self, older_than: float) -> list[str]:
        """Put back in their queue the messages a worker fetched but never started.

        kombu's Redis transport keeps a fetched message in its ``unacked`` hash until it is acked,
        and gives it back only after the visibility timeout (an hour). With a prefetch of one, a
        live worker starts what it fetched at once, so a message still unstarted after
        ``older_than`` seconds belongs to a worker that died between fetching and starting it.
        """
        running = set(self.running_jobs())
        restored = []
        stale = cast(list[bytes], self.redis.zrangebyscore(UNACKED_INDEX, "-inf", time.time() - older_than))
        for tag in stale:
            raw = self.redis.hget(UNACKED, tag)
            if raw is None:
                continue
            message, _exchange, queue = json.loads(raw)
            job_id = message_job_id(message)
            # Ended already (a cancelled job's worker may still be busy until its next step):
            # nothing to give back; the broker redelivers it after the visibility timeout and the
            # task drops it then.
            if job_id and self.redis.hexists(job_key(job_id), "outcome"):
                continue
            if job_id in running or not self.redis.hdel(UNACKED, tag):  # started, or acked meanwhile
                continue
            pipe = self.redis.pipeline(transaction=True)
            pipe.zrem(UNACKED_INDEX, tag)
            # The right end is the next to be fetched, in the list of the message's priority.
            pipe.rpush(broker_list(queue, message_priority(message)), json.dumps(message))
            pipe.execute()
            restored.append(job_id or tag.decode())
        return restored

    def find_unsent(self, queues: tuple[str, ...], grace: float) -> list[str]:
        """Queued jobs whose message is nowhere in Redis, now and at least ``grace`` seconds ago.

        Redis can hand a message (BRPOP) to a connection whose worker was just killed: it is then in
        no queue list and not in ``unacked``, and Celery never sees it again. A healthy message is
        out of sight only briefly: between ``create`` and the publish, and between the BRPOP and
        kombu writing it to ``unacked`` (the same function call in the worker). So a job counts as
        unsent only when it is older than ``grace`` and was missing on two looks ``grace`` apart.
        """
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        for queue in queues:
            queued_before(pipe, queue, now - grace)
        candidates = {job_id.decode() for ids in pipe.execute() for job_id in ids}
        if not candidates:
            self.redis.delete(UNSENT)
            return []
        # One snapshot of every place a message can be (MULTI/EXEC: nothing moves between the reads).
        pipe = self.redis.pipeline(transaction=True)
        for queue in queues:
            for name in broker_lists(queue):
                pipe.lrange(name, 0, -1)
        pipe.hvals(UNACKED)
        pipe.zrange(RUNNING, 0, -1)
        *lists, unacked, running = pipe.execute()
        present = {message_job_id(_decoded(raw)) for items in lists for raw in items}
        for raw in unacked:  # [message, exchange, routing key]
            entry = _decoded(raw)
            present.add(message_job_id(entry[0] if isinstance(entry, list) and entry else None))
        present |= {job_id.decode() for job_id in running}
        missing = sorted(candidates - present)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in missing:
            pipe.hmget(job_key(job_id), "task_type", "outcome")
        missing = [
            job_id
            for job_id, (task_type, outcome) in zip(missing, pipe.execute(), strict=True)
            if task_type is not None and outcome is None  # an expired or ended job needs no message
        ]
        # Only the reconciler (one at a time, under its lock) writes UNSENT: read, then replace.
        raw_seen = cast(list[tuple[bytes, float]], self.redis.zrange(UNSENT, 0, -1, withscores=True))
        seen_before = {job_id.decode(): since for job_id, since in raw_seen}
        first_seen = {job_id: seen_before.get(job_id, now) for job_id in missing}
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(UNSENT)
        if first_seen:
            pipe.zadd(UNSENT, first_seen)
            pipe.expire(UNSENT, self.ttl)
        pipe.execute()
        return [job_id for job_id, since in first_seen.items() if now - since >= grace]

    def claim_resend(self, job_id: str, note: str) -> bool:
        """True for the one caller that may publish this job's message again (never twice per job)."""
        return bool(self._claim_resend(keys=[job_key(job_id), UNSENT], args=[time.time(), note, job_id]))


class JobStore(QueueRecovery):
    """Redis access for jobs, shared by the web process (job client) and the workers."""

    def __init__(self, client: redis.Redis, ttl: int) -> None:
        self.redis = client
        self.ttl = ttl
        self._claim = client.register_script(CLAIM_OUTCOME)
        self._touch = client.register_script(TOUCH)
        self._claim_resend = client.register_script(CLAIM_RESEND)
        self._advance = client.register_script(ADVANCE)
        self._waiting = client.register_script(WAITING)
        self.workers = WorkerRegistry(client)
        self.submissions = SubmissionCounter(client)

    # -- submit ---------------------------------------------------------------------------
    def create(self, job_id: str, task_type: str, queue: str, images: dict[str, bytes], record: dict[str, Any]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        self.add_job(pipe, job_id, task_type, queue, images, record)
        pipe.execute()

    def add_job(
        self,
        pipe: Any,
        job_id: str,
        task_type: str,
        queue: str,
        images: dict[str, bytes],
        record: dict[str, Any],
        meta: JobMeta | None = None,
    ) -> None:
        """Add to ``pipe`` the writes that create a job: queued at its level, unless it is a chain's later
        step (it waits, unqueued, for its input); an item of a batch, a step of a chain, its owner's."""
        meta = meta or JobMeta()
        link = meta.link
        now = time.time()
        for field, data in images.items():
            pipe.set(input_key(job_id, field), data, ex=self.ttl)
        fields: dict[str, str | float] = {
            "task_type": task_type,
            "queue": queue,
            "created": now,
            "level": meta.level,
            "inputs": json.dumps(sorted({*images, *([link.awaits] if link and link.awaits else [])})),
            **{key: json.dumps(value) for key, value in record.items()},
            **meta.fields(),
        }
        pipe.hset(job_key(job_id), mapping=cast(Any, fields))  # redis-py types keys invariantly
        pipe.expire(job_key(job_id), self.ttl)
        if link is None or link.awaits is None:
            pipe.zadd(queued_key(queue), {job_id: queue_score(now, meta.level)})
            if meta.owner is not None:  # what the owner has waiting: the next job's level
                lane = owner_queued_key(queue, meta.owner, meta.batch_id is not None)
                pipe.zadd(lane, {job_id: now})
                pipe.expire(lane, self.ttl)
        self.forget_expired(pipe, queue, now, levels=(meta.level,))  # the reconciler sweeps every level

    def forget_expired(self, pipe: Any, queue: str, now: float, levels: tuple[int, ...] = PRIORITY_STEPS) -> None:
        """Add to ``pipe`` the removal, from ``queue``'s order, of the jobs that expired queued."""
        for level in levels:
            pipe.zremrangebyscore(queued_key(queue), level * LEVEL_SPAN, level * LEVEL_SPAN + now - self.ttl)

    def waiting_of(self, owner: str, queue: str, batched: bool) -> int:
        """How many jobs of ``owner``'s lane wait in ``queue`` now, as far as the levels go."""
        first, last = BATCH_LEVELS if batched else SINGLE_LEVELS
        lane = owner_queued_key(queue, owner, batched)
        return int(self._waiting(keys=[lane, queued_key(queue)], args=[last - first + 1]))

    def delete(self, job_id: str, queue: str) -> None:
        keys = [job_key(job_id), output_key(job_id), *self._input_keys(job_id)]
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(*keys)
        pipe.zrem(queued_key(queue), job_id)
        pipe.execute()

    # -- read -----------------------------------------------------------------------------
    def record(self, job_id: str) -> dict[str, str] | None:
        raw = cast(dict[bytes, bytes], self.redis.hgetall(job_key(job_id)))
        record = {key.decode(): value.decode() for key, value in raw.items()}
        return record if "task_type" in record else None  # a partial hash is no job

    def snapshot(self, job_id: str, meta_key: str) -> tuple[dict[str, str] | None, bytes | None]:
        """The job's record and its Celery state (raw JSON), in one round trip: what a status poll reads."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(job_key(job_id))
        pipe.get(meta_key)
        raw, meta = pipe.execute()
        record = {key.decode(): value.decode() for key, value in raw.items()}
        return (record if "task_type" in record else None), meta

    def queue_view(self, job_id: str, queue: str, task_type: str) -> tuple[int | None, int, float | None]:
        """(position from 1 or None, live workers on the queue, typical run time), in one round trip.

        Jobs of every type share a queue, so the queue's recent run times predict the wait best;
        the task type's stand in before the queue has any.
        """
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrank(queued_key(queue), job_id)
        pipe.zcount(workers_key(queue), time.time() - WORKER_STALE_AFTER, "+inf")
        pipe.lrange(runtimes_key(queue), 0, -1)
        pipe.lrange(runtimes_key(task_type), 0, -1)
        rank, workers, by_queue, by_type = pipe.execute()
        samples = [float(value) for value in (by_queue or by_type)]
        return (None if rank is None else rank + 1), int(workers), (statistics.median(samples) if samples else None)

    def output_image(self, job_id: str) -> bytes | None:
        return cast(bytes | None, self.redis.get(output_key(job_id)))

    def queue_lengths(self, queues: tuple[str, ...]) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for queue in queues:
            pipe.zcard(queued_key(queue))  # not the broker list: a cancelled job still sits there until popped
        return dict(zip(queues, pipe.execute(), strict=True))

    # -- cancel and finish ----------------------------------------------------------------
    def claim_outcome(self, job_id: str, outcome: str) -> str | None:
        """Set the job's outcome unless one is set; return the outcome that was there, if any.

        A job whose record expired answers ``EXPIRED`` and is not brought back to life.
        """
        current = self._claim(keys=[job_key(job_id)], args=[outcome])
        return None if current == b"" else current.decode()

    def finished(self, job_id: str) -> None:
        self.redis.zrem(RUNNING, job_id)

    def running_on(self, queue: str, meta_key: Callable[[str], Any]) -> list[tuple[float, float]]:
        """(seconds running, progress 0-1) of each job running on ``queue`` now."""
        started = cast(list[tuple[bytes, float]], self.redis.zrange(RUNNING, 0, -1, withscores=True))
        if not started:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for job_id, _ in started:
            pipe.hget(job_key(job_id.decode()), "queue")
            pipe.get(meta_key(job_id.decode()))
        answers = pipe.execute()
        now, running = time.time(), []
        for (_, since), job_queue, meta in zip(started, answers[::2], answers[1::2], strict=True):
            if job_queue is not None and job_queue.decode() == queue:
                info = (json.loads(meta).get("result") or {}) if meta else {}
                progress = info.get("progress", 0) / 100 if isinstance(info, dict) else 0.0
                running.append((now - since, progress))
        return running

    def touch(self, job_id: str, field: str = "", value: object = "") -> bool:
        """Restart the TTL of the job's record and inputs (optionally setting a field), if it still exists."""
        args: list[str | int] = [self.ttl, job_key(""), field, str(value), batch_key(""), chain_key("")]
        return bool(self._touch(keys=[job_key(job_id)], args=args))

    def advance(self, previous: str, job_id: str, record: dict[str, str]) -> str:
        """Hand ``previous``'s output to the chain step ``job_id`` and queue it, once: 'OK' for the one
        caller that must now send its message; else why not ('SENT', 'ENDED', 'EXPIRED', 'NO_OUTPUT')."""
        keys = [job_key(previous), output_key(previous), job_key(job_id), input_key(job_id, record["awaits"]),
                queued_key(record["queue"])]  # fmt: skip
        score = queue_score(float(record["created"]), record_level(record))
        return cast(bytes, self._advance(keys=keys, args=[score, self.ttl, job_id])).decode()

    def dequeue(self, job_id: str, queue: str) -> None:
        self.redis.zrem(queued_key(queue), job_id)

    def _input_keys(self, job_id: str) -> list[str]:
        raw = self.redis.hget(job_key(job_id), "inputs")
        return [input_key(job_id, field) for field in json.loads(raw)] if raw else []


class WorkerRegistry:
    """Which workers are alive: each beats every few seconds, per queue and per main process."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def heartbeat(self, hostname: str, queues: list[str], process: str) -> None:
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(PROCESSES, {process: now})
        pipe.zremrangebyscore(PROCESSES, "-inf", now - 3600)
        for queue in queues:
            pipe.zadd(workers_key(queue), {hostname: now})
            pipe.zremrangebyscore(workers_key(queue), "-inf", now - 3600)
        pipe.execute()

    def forget_worker(self, hostname: str, queues: list[str], process: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(PROCESSES, process)
        for queue in queues:
            pipe.zrem(workers_key(queue), hostname)
        pipe.execute()

    def live(self, queues: tuple[str, ...]) -> dict[str, list[str]]:
        since = time.time() - WORKER_STALE_AFTER
        pipe = self.redis.pipeline(transaction=False)
        for queue in queues:
            pipe.zrangebyscore(workers_key(queue), since, "+inf")
        return {
            queue: sorted(name.decode() for name in names) for queue, names in zip(queues, pipe.execute(), strict=True)
        }

    def live_processes(self) -> set[str]:
        since = time.time() - WORKER_STALE_AFTER
        return {name.decode() for name in cast(list[bytes], self.redis.zrangebyscore(PROCESSES, since, "+inf"))}


class SubmissionCounter:
    """Submissions per client in a fixed window (the rate limit), shared by every web process."""

    def __init__(self, client: redis.Redis) -> None:
        self._count_submission = client.register_script(COUNT_SUBMISSION)

    def count(self, client: str, window: int) -> tuple[int, float]:
        """Count one submission of ``client`` in its current ``window``-second window: (count, seconds left)."""
        count, left = self._count_submission(keys=[rate_key(client)], args=[window * 1000])
        return int(count), int(left) / 1000
