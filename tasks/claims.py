"""A worker's writes to a job, one Redis script each: start it, publish its progress, end it.

Each is one round trip, and atomic: a start reads the record and claims the run together, an end
claims the outcome and stores the output together, and a progress update is written only while
the job has no outcome, so a late update never hides a job's end (or its cancel) from a reader.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

import redis

from tasks.store import (
    RUNNING,
    RUNTIME_SAMPLES,
    TOUCH_JOB,
    batch_key,
    chain_key,
    job_key,
    output_key,
    queued_key,
    runtimes_key,
)

# KEYS: the job. ARGV: this worker, now, ttl, the job/batch/chain/queued key prefixes, RUNNING, the job
# id, and "1" to take over a job another (dead) worker started. Answers {state, detail, record...}.
START = (
    TOUCH_JOB
    + """
local fields = redis.call('hgetall', KEYS[1])
local record = {}
for i = 1, #fields, 2 do record[fields[i]] = fields[i + 1] end
if not record['task_type'] then return {'EXPIRED', ''} end
if record['outcome'] then return {'ENDED', record['outcome']} end
local owner = record['worker']
if ARGV[9] ~= '1' and owner and owner ~= ARGV[1] and redis.call('zscore', ARGV[8], ARGV[10]) then
  return {'BUSY', owner}
end
redis.call('zrem', ARGV[7] .. record['queue'], ARGV[10])
redis.call('hset', KEYS[1], 'started', ARGV[2], 'worker', ARGV[1])
redis.call('hdel', KEYS[1], 'note')
local attempt = redis.call('hincrby', KEYS[1], 'attempts', 1)
redis.call('zadd', ARGV[8], ARGV[2], ARGV[10])
touch_job(KEYS[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
local answer = {'OK', tostring(attempt)}
for i = 1, #fields do answer[#answer + 1] = fields[i] end
return answer
"""
)
# KEYS: the job, its output, its Celery state. ARGV: the outcome, this attempt's token, RUNNING, the job
# id, now, ttl, the job/batch/chain prefixes, then for a SUCCESS: the PNG, its run time, the two run-time
# lists, their length, and the Celery state to store and publish ('' for none). Answers '' when this
# call (or this attempt's earlier try) ended the job, else the outcome there.
FINISH = (
    TOUCH_JOB
    + """
redis.call('zrem', ARGV[3], ARGV[4])
if redis.call('exists', KEYS[1]) == 0 then return 'EXPIRED' end
if redis.call('hsetnx', KEYS[1], 'outcome', ARGV[1]) == 0 then
  if redis.call('hget', KEYS[1], 'ended_by') == ARGV[2] then return '' end
  return redis.call('hget', KEYS[1], 'outcome')
end
redis.call('hset', KEYS[1], 'ended_by', ARGV[2], 'finished', ARGV[5])
if ARGV[10] then
  redis.call('set', KEYS[2], ARGV[10], 'EX', ARGV[6])
  for i = 12, 13 do
    redis.call('lpush', ARGV[i], ARGV[11])
    redis.call('ltrim', ARGV[i], 0, tonumber(ARGV[14]) - 1)
  end
  if ARGV[15] ~= '' then
    redis.call('set', KEYS[3], ARGV[15], 'EX', ARGV[6])
    redis.call('publish', KEYS[3], ARGV[15])
  end
end
touch_job(KEYS[1], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
return ''
"""
)
# KEYS: the job, its Celery result key. ARGV: the state to publish ('' for none), its expiry, and "1"
# to restart the job's TTL. Writes only while the job has no outcome; answers the outcome, or ''.
PROGRESS = (
    TOUCH_JOB
    + """
if redis.call('exists', KEYS[1]) == 0 then return 'EXPIRED' end
local outcome = redis.call('hget', KEYS[1], 'outcome')
if outcome then return outcome end
if ARGV[1] ~= '' then
  redis.call('set', KEYS[2], ARGV[1], 'EX', ARGV[2])
  redis.call('publish', KEYS[2], ARGV[1])
end
if ARGV[3] == '1' then touch_job(KEYS[1], ARGV[2], ARGV[4], ARGV[5], ARGV[6]) end
return ''
"""
)


@dataclass(frozen=True)
class Start:
    """What a start found: ``state`` OK (started, as ``attempt``), EXPIRED, ENDED (``detail`` the
    outcome) or BUSY (``detail`` the worker process running it); ``record`` as it was before."""

    state: str
    detail: str = ""
    attempt: int = 0
    record: dict[str, str] | None = None


@dataclass(frozen=True)
class Output:
    """A finished job's PNG, what its run adds to its queue's run times, and its Celery state (stored and
    published with the outcome: a client waiting for the job hears of its end with the end itself)."""

    png: bytes
    task_type: str
    queue: str
    runtime: float
    state_key: str = ""
    state: str = ""


class JobClaims:
    """The worker side of a job's life in Redis."""

    def __init__(self, client: redis.Redis, ttl: int) -> None:
        self.redis, self.ttl = client, ttl
        self._start = client.register_script(START)
        self._finish = client.register_script(FINISH)
        self._progress = client.register_script(PROGRESS)
        self._prefixes = [job_key(""), batch_key(""), chain_key("")]

    def start(self, job_id: str, worker: str, take_over: bool = False) -> Start:
        """Take the job off its queue's order, count the attempt and restart its TTL, unless it expired,
        ended, or runs on another worker (``take_over`` when that worker is dead)."""
        args: list[Any] = [
            worker,
            time.time(),
            self.ttl,
            *self._prefixes,
            queued_key(""),
            RUNNING,
            int(take_over),
            job_id,
        ]
        answer = [item.decode() for item in cast(list[bytes], self._start(keys=[job_key(job_id)], args=args))]
        if answer[0] != "OK":
            return Start(answer[0], answer[1])
        fields = answer[2:]
        return Start("OK", attempt=int(answer[1]), record=dict(zip(fields[::2], fields[1::2], strict=True)))

    def finish(self, job_id: str, outcome: str, token: str, output: Output | None = None) -> str | None:
        """Take the job off the running set and claim ``outcome`` (with ``output`` stored, its TTL
        restarted); None if this attempt (``token``) ended it, else the outcome that was there first
        (EXPIRED for a job whose record expired)."""
        args: list[Any] = [outcome, token, RUNNING, job_id, time.time(), self.ttl, *self._prefixes]
        keys = [job_key(job_id), output_key(job_id)]
        if output is not None:
            args += [output.png, round(output.runtime, 4), runtimes_key(output.task_type),
                     runtimes_key(output.queue), RUNTIME_SAMPLES, output.state]  # fmt: skip
            if output.state:
                keys.append(output.state_key)
        earlier = cast(bytes, self._finish(keys=keys, args=args))
        return earlier.decode() or None

    def publish(self, job_id: str, meta_key: str, state: dict[str, Any] | None, touch: bool = False) -> str | None:
        """Publish ``state`` as the job's Celery state (None: publish nothing) and optionally restart its
        TTL, while it has no outcome; the job's outcome if it has one (REVOKED: cancelled)."""
        payload = json.dumps(state) if state is not None else ""
        args: list[Any] = [payload, self.ttl, "1" if touch else "0", *self._prefixes]
        outcome = cast(bytes, self._progress(keys=[job_key(job_id), meta_key], args=args))
        return outcome.decode() or None
