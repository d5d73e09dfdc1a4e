"""The job client: submit, status, result, cancel. REST and the page both go through it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import math
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import redis.asyncio
from celery import Celery

from pipelines.validation import InvalidSubmission, validate_submission
from settings import QUEUES, Settings, get_settings
from tasks.celery_app import TASK_NAME, make_celery, queue_for
from tasks.store import OUTCOME_REVOKED, JobStore, connect

__all__ = [
    "InvalidSubmission",
    "JobClient",
    "JobConflict",
    "JobNotFound",
    "JobStatus",
    "RateLimited",
    "ServiceUnavailable",
    "requester",
]

PENDING, PROCESSING, SUCCESS, FAILURE, REVOKED = "PENDING", "PROCESSING", "SUCCESS", "FAILURE", "REVOKED"
FINISHED = (SUCCESS, FAILURE, REVOKED)
WAIT_MAX = 30.0  # seconds a status request may wait for a change (?wait=)
RECHECK = 0.5  # while waiting, what is not published (queue position, a cancel) is re-read this often
STARTS_IN = ", starts in about "
WAITERS_MAX = 1000  # waiting requests per web process (a Redis connection each); beyond, answers come at once
_waiters = 0


class JobNotFound(LookupError):
    """Unknown, malformed or expired task id."""


class ServiceUnavailable(RuntimeError):
    """Redis (or the broker) cannot be reached."""


class RateLimited(RuntimeError):
    """Too many submissions from one client; ``retry_after`` seconds until its window resets."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class JobConflict(RuntimeError):
    """The job is not in a state that allows the request; ``status`` says where it is."""

    def __init__(self, message: str, status: JobStatus) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class JobStatus:
    """What a client sees of a job."""

    task_id: str
    status: str
    progress: int
    message: str
    result_available: bool
    task_type: str
    queue: str
    position: int | None = None
    eta_seconds: float | None = None
    updated_at: float | None = None  # when the worker published this progress (Unix time)
    preview: str | None = None  # while PROCESSING, when the engine publishes one: a small base64 PNG

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.position is None:  # queue fields only while queued (eta_seconds may be null then)
            del data["position"], data["eta_seconds"]
        for optional in ("updated_at", "preview"):
            if data[optional] is None:
                del data[optional]
        return data


def requester(headers: Mapping[str, str], peer: str | None, settings: Settings) -> str:
    """Who a submission counts against: the user or API token when access control is on (the
    middleware has checked them by then), else the client's IP address. X-Forwarded-For can be
    written by anyone, so it is read only with ``trusted_proxies`` set: each trusted proxy appends
    the address it saw, so the client is that many entries from the right."""
    scheme, _, value = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "basic" and settings.credentials:
        with contextlib.suppress(ValueError):
            return "user:" + base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[0]
    if scheme.lower() == "bearer" and settings.tokens:
        return "token:" + hashlib.sha256(value.strip().encode()).hexdigest()[:24]  # no secret in a Redis key
    if settings.trusted_proxies:
        hops = [hop.strip() for hop in (headers.get("x-forwarded-for") or "").split(",") if hop.strip()]
        if len(hops) >= settings.trusted_proxies:
            return "ip:" + hops[-settings.trusted_proxies]
    return "ip:" + (peer or "unknown")


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _failure_message(info: Any) -> str:
    if isinstance(info, dict) and "exc_message" in info:
        args = info["exc_message"]
        text = " ".join(str(arg) for arg in args) if isinstance(args, list | tuple) else str(args)
        return text or info.get("exc_type", "Job failed")
    return str(info) if info else "Job failed"


class JobClient:
    """Submit jobs and follow them, against one Redis. Thread-safe; make one per process."""

    def __init__(self, settings: Settings, celery: Celery | None = None) -> None:
        self.settings = settings
        self.celery = celery or make_celery(settings)
        self.store = JobStore(connect(settings.broker_url), settings.result_ttl)

    # -- submit ---------------------------------------------------------------------------
    def admit(self, headers: Mapping[str, str], peer: str | None) -> None:
        """Count a submission against its client's rate limit; :class:`RateLimited` when over it."""
        window = self.settings.rate_window
        if window is None:
            return
        allowed, seconds = window
        count, left = self.store.count_submission(requester(headers, peer, self.settings), seconds)
        if count > allowed:
            retry_after = max(1, math.ceil(left))
            raise RateLimited(
                f"Too many submissions: the limit is {self.settings.rate_limit} per client; "
                f"try again in {retry_after} s",
                retry_after,
            )

    def submit(self, fields: Mapping[str, Any], files: Mapping[str, bytes] | None = None) -> JobStatus:
        """Validate and enqueue a job; raises ``InvalidSubmission`` with field errors, enqueues nothing then."""
        submission, _ = validate_submission(fields, files or {}, self.settings.max_pixels)
        task_type = submission.operation.name
        queue = queue_for(task_type, self.settings, submission.parameters)
        job_id = str(uuid.uuid4())
        # prompt and parameters are kept so that a job whose worker died can be sent again.
        record = {"prompt": submission.prompt, "sizes": submission.sizes, "parameters": submission.parameters}
        self.store.create(job_id, task_type, queue, submission.image_bytes, record)
        try:
            self.celery.send_task(
                TASK_NAME,
                kwargs={"task_type": task_type, "parameters": submission.parameters, "prompt": submission.prompt},
                task_id=job_id,
                queue=queue,
            )
        except Exception as exc:
            self.store.delete(job_id, queue)
            raise ServiceUnavailable(f"Could not enqueue the job: the broker is unreachable ({exc})") from exc
        return JobStatus(job_id, PENDING, 0, f"{task_type} task submitted successfully", False, task_type, queue)

    # -- follow ---------------------------------------------------------------------------
    async def watch(self, task_id: str, seconds: float, gone: Callable[[], Awaitable[bool]] | None = None) -> JobStatus:
        """The job's status once it differs from now, or once ``seconds`` have passed (long polling).

        Celery's Redis backend publishes every state it stores on the job's key (progress, the end),
        so a waiting client hears of it at once instead of at its next poll. What is not published
        (the queue position, a cancel) is re-read every ``RECHECK`` seconds, and so is ``gone()``:
        a client that left, or a server shutting down, ends the wait.
        """
        global _waiters
        task_id = self._canonical(task_id)
        if _waiters >= WAITERS_MAX:
            return await asyncio.to_thread(self.status, task_id)
        key = self.celery.backend.get_key_for_task(task_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(seconds, WAIT_MAX)
        # Read first: an unknown id is a 404 and an unreachable Redis a 503 at once (within the
        # client's 1 s timeout), before a listener waits for its connection.
        first = await asyncio.to_thread(self.status, task_id)
        if first.status in FINISHED:
            return first
        _waiters += 1
        try:
            async with _listener(self.settings.broker_url).pubsub() as pubsub:
                try:
                    await pubsub.subscribe(key)
                    await pubsub.get_message(timeout=1.0)  # its confirmation: from now on nothing published is missed
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    # No listener (a burst of connections, Redis slow): answer at once, as without ?wait=.
                    return await asyncio.to_thread(self.status, task_id)
                current = await asyncio.to_thread(self.status, task_id)  # what changed before the subscription
                while current.status not in FINISHED and _looks(current) == _looks(first):
                    remaining = deadline - loop.time()
                    if remaining <= 0 or (gone is not None and await gone()):
                        break
                    try:
                        await pubsub.get_message(timeout=min(remaining, RECHECK))
                    except redis.exceptions.ConnectionError:
                        break  # the listener's connection dropped: answer with the last read
                    current = await asyncio.to_thread(self.status, task_id)
                return current  # the latest read: at most RECHECK seconds old
        finally:
            _waiters -= 1

    @staticmethod
    def _canonical(task_id: str) -> str:
        """The id as we write it (lower-case UUID); :class:`JobNotFound` for anything else."""
        try:
            canonical = str(uuid.UUID(task_id))
        except (ValueError, TypeError, AttributeError):
            raise JobNotFound(task_id) from None
        if canonical != task_id.lower():  # braces, "urn:uuid:", no hyphens: not an id we gave out
            raise JobNotFound(task_id)
        return canonical

    def _record(self, task_id: str) -> dict[str, str]:
        record = self.store.record(self._canonical(task_id))
        if record is None:
            raise JobNotFound(task_id)
        return record

    def _read(self, task_id: str) -> tuple[str, dict[str, str], dict[str, Any]]:
        """(canonical id, job record, Celery state), in one round trip; :class:`JobNotFound` if gone."""
        task_id = self._canonical(task_id)
        record, raw_meta = self.store.snapshot(task_id, self.celery.backend.get_key_for_task(task_id))
        if record is None:
            raise JobNotFound(task_id)
        return task_id, record, json.loads(raw_meta) if raw_meta else {"status": PENDING, "result": None}

    def status(self, task_id: str) -> JobStatus:
        """The job's current state; raises :class:`JobNotFound` for unknown or expired ids."""
        return self._status_of(*self._read(task_id))

    def _status_of(self, task_id: str, record: dict[str, str], meta: dict[str, Any]) -> JobStatus:
        task_type, queue = record["task_type"], record["queue"]

        def make(state: str, progress: int, message: str, **extra: Any) -> JobStatus:
            return JobStatus(task_id, state, progress, message, state == SUCCESS, task_type, queue, **extra)

        if record.get("outcome") == OUTCOME_REVOKED:
            return make(REVOKED, 0, "Cancelled")
        state, info = meta["status"], meta.get("result")
        if state == PENDING:
            return self._queued(task_id, record, make)
        if state == "STARTED":
            return make(PROCESSING, 0, "Starting")
        if state == PROCESSING:
            info = info or {}
            progress, message = int(info.get("progress", 0)), str(info.get("message", "Working"))
            preview = info.get("preview")
            return make(
                PROCESSING,
                progress,
                message,
                updated_at=info.get("updated_at"),
                preview=preview if isinstance(preview, str) else None,
            )
        if state == "RETRY":
            return make(PROCESSING, 0, f"Retrying: {_failure_message(info)}")
        if state == SUCCESS:
            return make(SUCCESS, 100, "Done")
        if state == FAILURE:
            return make(FAILURE, 0, _failure_message(info))
        if state == REVOKED:
            return make(REVOKED, 0, "Cancelled")
        return make(state, 0, state.title())

    def _queued(self, task_id: str, record: dict[str, str], make: Callable[..., JobStatus]) -> JobStatus:
        queue, task_type = record["queue"], record["task_type"]
        position, workers, runtime = self.store.queue_view(task_id, queue, task_type)
        if position is None:  # taken off the queue, the worker's first update not yet written
            return make(PROCESSING, 0, "Starting")
        message = f"Queued — {ordinal(position)} in the {queue} queue"
        if record.get("note"):
            message += f" ({record['note']})"
        eta = None
        if not workers:
            message += f"; no {queue} worker is running, so it waits until one starts"
        else:
            if runtime is not None:
                eta = round(self._wait(queue, position, workers, runtime), 1)
                message += f"{STARTS_IN}{max(1, round(eta))} s"
        return make(PENDING, 0, message, position=position, eta_seconds=eta)

    def _wait(self, queue: str, position: int, workers: int, typical: float) -> float:
        """Seconds until a job at ``position`` starts: what the running jobs have left, plus the
        jobs ahead of it at the queue's typical run time, shared among the queue's workers."""
        left = 0.0
        for elapsed, progress in self.store.running_on(queue, self.celery.backend.get_key_for_task):
            if progress >= 0.05:  # extrapolate from its own pace
                left += elapsed * (1 - progress) / progress
            else:  # barely started: assume a typical job, or half again what it already took
                left += max(typical - elapsed, elapsed / 2)
        return (left + (position - 1) * typical) / workers

    def result(self, task_id: str) -> tuple[JobStatus, dict[str, Any], bytes]:
        """The finished job's result metadata and PNG; :class:`JobConflict` if not ``SUCCESS``."""
        task_id, record, meta = self._read(task_id)
        status = self._status_of(task_id, record, meta)
        if status.status != SUCCESS:
            raise JobConflict(f"Task is {status.status}, no result", status)
        result = meta.get("result") or {}
        png = self.store.output_image(status.task_id)
        if png is None:
            raise JobNotFound(task_id)
        return status, result, png

    def cancel(self, task_id: str) -> JobStatus:
        """Cancel a queued or running job; :class:`JobConflict` when it already finished."""
        record = self._record(task_id)
        task_id = task_id.lower()
        previous = self.store.claim_outcome(task_id, OUTCOME_REVOKED)
        if previous == "EXPIRED":
            raise JobNotFound(task_id)
        if previous not in (None, OUTCOME_REVOKED):
            raise JobConflict("Task already finished", self.status(task_id))
        if previous is None:
            self.store.dequeue(task_id, record["queue"])
            self.celery.backend.mark_as_revoked(task_id, reason="cancelled")
            # A worker that already holds the message skips it; a running job stops at its next step.
            self.celery.control.revoke(task_id)
        return self.status(task_id)

    def health(self) -> dict[str, Any]:
        """Redis reachability, live workers and waiting jobs per queue."""
        started = time.perf_counter()
        self.store.redis.ping()
        workers = self.store.live_workers(QUEUES)
        waiting = self.store.queue_lengths(QUEUES)
        return {
            "status": "ok",
            "redis": {"reachable": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)},
            "queues": {queue: {"workers": workers[queue], "waiting": waiting[queue]} for queue in QUEUES},
        }


_listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, redis.asyncio.Redis]] = (
    weakref.WeakKeyDictionary()
)


def _listener(url: str) -> redis.asyncio.Redis:
    """An asyncio Redis client per event loop and URL for the waiting requests: a connection each."""
    clients = _listeners.setdefault(asyncio.get_running_loop(), {})
    if url not in clients:
        clients[url] = redis.asyncio.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=1.0, max_connections=WAITERS_MAX
        )
    return clients[url]


def _looks(status: JobStatus) -> tuple[Any, ...]:
    """What a waiting client wants to hear a change of: not the start estimate, which moves with
    the clock while anything runs."""
    message = status.message.split(STARTS_IN)[0]
    return status.status, status.progress, message, status.position, status.updated_at, status.preview


@lru_cache(maxsize=1)
def get_client() -> JobClient:
    """The process-wide job client for the global settings (sharing ``tasks.app``)."""
    from tasks import app

    return JobClient(get_settings(), app)


# -- what the page may offer, read from the registry (ui/ imports this module, never pipelines/) --
def style_presets() -> list[tuple[str, str]]:
    """(name, title) of each style preset."""
    from pipelines.style_transfer import STYLE_PRESETS

    return [(preset.name, preset.title) for preset in STYLE_PRESETS.values()]


def background_models() -> tuple[str, ...]:
    from pipelines.background_removal import REMBG_MODELS

    return REMBG_MODELS


def engines(task_type: str) -> tuple[str, ...]:
    from pipelines import OPERATIONS

    return OPERATIONS[task_type].engines


def operations_by_queue() -> dict[str, list[str]]:
    """Queue → the titles of the operations routed to it (after ATELIER_QUEUES overrides)."""
    from pipelines import OPERATIONS

    by_queue: dict[str, list[str]] = {queue: [] for queue in QUEUES}
    for name, operation in OPERATIONS.items():
        by_queue[queue_for(name, get_settings())].append(operation.title.lower())
    return by_queue
