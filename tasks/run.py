"""The one generic Celery task: fetch inputs, run the operation, report progress, store the output.

Like a web view, it handles transport and state; the work itself lives in ``pipelines/``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, TypeVar, cast

import redis
from celery import Task, shared_task, signals
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from kombu.exceptions import OperationalError

from pipelines import OPERATIONS
from pipelines.base import JobCancelled, JobInput, JobOutput, PipelineError
from pipelines.images import ImageRejected, encode_png, open_image
from pipelines.png_info import a1111_parameters
from pipelines.validation import validate_parameters
from settings import QUEUES, Settings
from tasks.celery_app import TASK_NAME
from tasks.chains import history, reconcile_chains, send_next
from tasks.claims import JobClaims, Output
from tasks.models import ModelReporter
from tasks.progress import JobHandedBack, ProgressReporter, RunningJob, publisher
from tasks.shutdown import handing_back, remember_stop_timeout
from tasks.states import JobState
from tasks.store import (
    RECONCILER_LOCK,
    JobStore,
    connect,
    input_key,
    job_key,
    output_key,
    record_level,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
HEARTBEAT_SECONDS = 2.0
RECONCILE_EVERY = 5.0
PROVENANCE_KEYS = ("engine", "model", "seed", "seeds")  # copied from an output's metadata into its PNG
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OperationalError)
REDIS_WAIT = 60.0  # seconds a finished job waits for Redis to come back to store its outcome
HANDING_BACK_WAIT = 2.0  # the same, in a worker that is stopping
MAX_ATTEMPTS = 2  # a job whose worker dies is run at most once more
UNSTARTED_AFTER = 30.0  # seconds a fetched message may wait unstarted before its worker counts as dead
# A queued job's message may be out of sight for an instant (being published; popped by a worker's
# BRPOP and not yet in kombu's unacked hash, one function call later). Missing on two looks this
# far apart, in a job this old, it is lost: Redis handed it to the connection of a worker that died.
UNSENT_AFTER = 10.0
_main_pid = os.getpid()  # set again by worker_init, in the worker's main process, before the pool forks


def when_redis_answers(call: Callable[[], T], job_id: str, what: str) -> T:
    """``call()``, tried again while Redis is unreachable (restarting, say), for up to REDIS_WAIT s:
    a job that ran must not fail because Redis blinked as it ended. A worker that is stopping
    waits no longer than HANDING_BACK_WAIT: it must be gone within the stop timeout."""
    started = time.monotonic()
    while True:
        try:
            return call()
        except REDIS_DOWN as exc:
            waited = time.monotonic() - started
            if waited > REDIS_WAIT or (handing_back.is_set() and waited > HANDING_BACK_WAIT):
                raise
            log.warning("Job %s: Redis unreachable while %s (%s); trying again", job_id, what, exc)
            time.sleep(0.5)


def worker_process(hostname: str) -> str:
    """This worker's main process, as "host#pid": what the heartbeat reports and jobs record."""
    return f"{hostname}#{_main_pid}"


class JobFailed(Exception):
    """A job failure with a message meant for the user."""


def job_store(settings: Settings) -> JobStore:
    return JobStore(connect(settings.broker_url), settings.result_ttl)


@lru_cache(maxsize=4)
def _claims(url: str, ttl: int) -> JobClaims:
    return JobClaims(connect(url), ttl)


def job_claims(settings: Settings) -> JobClaims:
    return _claims(settings.broker_url, settings.result_ttl)


@shared_task(bind=True, name=TASK_NAME, throws=(JobFailed,))  # expected failures: logged without a traceback
def run_operation(self: Task, task_type: str, parameters: dict[str, Any], prompt: str | None = None) -> dict[str, Any]:
    """Run job ``self.request.id`` of ``task_type``; its images are read from Redis by job id."""
    settings: Settings = self.app.conf.atelier_settings
    store, claims = job_store(settings), job_claims(settings)
    job_id: str = self.request.id
    record, token = claim_start(self, store, claims, job_id)
    started = time.perf_counter()
    job, output = execute(self, claims, token, record, parameters, prompt)
    runtime = time.perf_counter() - started
    parameters_used = job.parameters.model_dump(mode="json")
    text = provenance(task_type, parameters_used, job.prompt, output)
    chained = "chain" in record
    if chained:  # every step so far, this one included
        text["atelier:chain"] = when_redis_answers(lambda: history(store, record), job_id, "reading its chain")
    png = encode_png(output.image, text)
    metadata = {"operation": task_type, "parameters": parameters_used, **output.metadata, "runtime": round(runtime, 4)}
    result = result_of(self, output, metadata, job.prompt, len(png))
    # A job's state is stored and published by the script that claims its end; a chain's step's by Celery,
    # after its next step is sent (so that a client it wakes sees the next step queued).
    state = "" if chained else self.backend.encode(self.backend.result_state(job_id, result, self.request))
    stored = Output(png, task_type, record["queue"], runtime, self.backend.get_key_for_task(job_id).decode(), state)
    earlier = end(claims, job_id, JobState.SUCCESS, token, stored)
    if earlier == JobState.REVOKED:  # cancelled in the last instant
        self.backend.mark_as_revoked(job_id, reason="cancelled")
        raise Ignore()
    if earlier is not None:  # another attempt ended it first, or it expired as it ran: keep that outcome
        log.warning("Job %s already ended (%s); dropping this attempt's result", job_id, earlier)
        raise Ignore()
    self.request.state_stored = not chained  # stored and published with its end: Celery need not again
    if chained:
        try:  # the next step, on its own queue; if this fails, the reconciler sends it
            send_next(store, self.app, record, job_id)
        except Exception as exc:
            log.warning("Job %s: the next step of chain %s was not sent yet (%s)", job_id, record["chain"], exc)
    return result


def result_of(task: Task, output: JobOutput, metadata: dict[str, Any], prompt: str | None, size: int) -> dict[str, Any]:
    """What a finished job's Celery state holds: where its PNG is, its size, who made it and how."""
    result: dict[str, Any] = {
        "image_key": output_key(task.request.id),
        "width": output.image.width,
        "height": output.image.height,
        "bytes": size,
        "worker": task.request.hostname,
        "metadata": metadata,
    }
    if output.prompt_used or prompt:
        result["prompt_used"] = output.prompt_used or prompt
    return result


def claim_start(task: Task, store: JobStore, claims: JobClaims, job_id: str) -> tuple[dict[str, str], str]:
    """The job's record and this attempt's token, once this worker may run it; ``Ignore`` for a job
    that must not run (expired, cancelled, ended, running elsewhere), :class:`JobFailed` after too
    many attempts."""
    me = worker_process(task.request.hostname)
    start = claims.start(job_id, me)
    if start.state == "BUSY":  # its record names another worker: alive, it runs the job; dead, it ran it
        if start.detail in store.workers.live_processes():
            log.warning("Job %s is running on %s; not running it twice", job_id, start.detail)
            raise Ignore()
        start = claims.start(job_id, me, take_over=True)
    if start.state == "EXPIRED":
        log.warning("Job %s expired before it ran; dropping it", job_id)
        raise Ignore()
    if start.state == "ENDED":
        if start.detail == JobState.REVOKED:
            task.backend.mark_as_revoked(job_id, reason="cancelled before it started")
        else:  # a second delivery of a job that already ended
            log.warning("Job %s already ended (%s); not running it again", job_id, start.detail)
        raise Ignore()
    token = f"{me}:{start.attempt}"
    if start.attempt > MAX_ATTEMPTS:
        end(claims, job_id, JobState.FAILURE, token)
        raise JobFailed(
            f"Worker lost: the job's worker died {start.attempt - 1} times while running it; not retried again"
        )
    assert start.record is not None
    return start.record, token


@contextlib.contextmanager
def published(task: Task, claims: JobClaims, job_id: str) -> Iterator[ProgressReporter]:
    """The job's progress callback, its state published by the pool process's publisher while the
    block runs; nothing of it is published once the block is left."""
    meta_key = task.backend.get_key_for_task(job_id).decode()
    running = RunningJob(job_id, meta_key, claims, touch_every=min(30.0, claims.ttl / 3))
    publisher.watch(running)
    try:
        yield ProgressReporter(running)
    finally:
        publisher.forget(running)


def execute(
    task: Task, claims: JobClaims, token: str, record: dict[str, str], parameters: dict[str, Any], prompt: str | None
) -> tuple[JobInput, JobOutput]:
    """Load the job's inputs and run its operation; a cancel ends it ``REVOKED`` (``Ignore``), any
    failure ends it with a :class:`JobFailed` whose message is meant for the user."""
    settings: Settings = task.app.conf.atelier_settings
    job_id: str = task.request.id
    task_type = record["task_type"]
    operation = OPERATIONS[task_type]
    try:
        with published(task, claims, job_id) as progress:
            progress(0.0, f"Starting {operation.title.lower()}")
            job = when_redis_answers(
                lambda: load_job(claims.redis, job_id, record, parameters, prompt, settings),
                job_id,
                "reading its inputs",
            )
            return job, operation.run(job, progress)
    except JobHandedBack:
        hand_back(task, job_store(settings), job_id, record)
        raise Ignore() from None
    except JobCancelled:
        end(claims, job_id, JobState.REVOKED, token)
        task.backend.mark_as_revoked(job_id, reason="cancelled")
        raise Ignore() from None
    except SoftTimeLimitExceeded:
        end(claims, job_id, JobState.FAILURE, token)
        raise JobFailed(f"The job exceeded the time limit of {settings.job_time_limit} s") from None
    except (PipelineError, ImageRejected) as exc:
        end(claims, job_id, JobState.FAILURE, token)
        raise JobFailed(str(exc)) from None
    except Exception as exc:
        log.exception("Job %s (%s) failed", job_id, task_type)
        end(claims, job_id, JobState.FAILURE, token)
        raise JobFailed(f"{task_type} failed: {type(exc).__name__}: {exc}") from exc


def hand_back(task: Task, store: JobStore, job_id: str, record: dict[str, str]) -> None:
    """Queue the job again with its record, and send its message again (this one is acked): the
    next start, or another worker on the same Redis, runs it."""
    try:
        store.hand_back(job_id, record["queue"], "requeued after a restart", task.backend.get_key_for_task(job_id))
        send_again(task.app, job_id, record)
    except REDIS_DOWN as exc:  # it stays in the running set: the reconciler sends it again
        log.warning("Job %s: Redis unreachable while handing it back (%s); the reconciler sends it again", job_id, exc)
        return
    log.warning("Job %s handed back to the %s queue: this worker is stopping", job_id, record["queue"])


def provenance(task_type: str, parameters: dict[str, Any], prompt: str | None, output: JobOutput) -> dict[str, Any]:
    """The PNG's text chunks: how the image was made, as the job asked and the engine reports it."""
    text: dict[str, Any] = {"Software": "Atelier", "atelier:operation": task_type, "atelier:parameters": parameters}
    if output.prompt_used or prompt:
        text["atelier:prompt"] = output.prompt_used or prompt
    for key in PROVENANCE_KEYS:
        if key in output.metadata:
            text[f"atelier:{key}"] = output.metadata[key]
    if task_type == "image_generation" and "atelier:prompt" in text:  # what A1111, IOPaint and image sites read
        text["parameters"] = a1111_parameters(text["atelier:prompt"], parameters, output.metadata)
    return text


def end(claims: JobClaims, job_id: str, outcome: str, token: str, output: Output | None = None) -> str | None:
    """Take the job off the running set and claim its outcome (storing ``output``); the outcome
    another attempt (or a cancel) claimed first, if any, or EXPIRED."""
    return when_redis_answers(lambda: claims.finish(job_id, outcome, token, output), job_id, "storing its outcome")


PARALLEL_DECODE_BYTES = 256 * 1024  # inputs this large decode in parallel


def load_job(
    client: redis.Redis,
    job_id: str,
    record: dict[str, str],
    parameters: dict[str, Any],
    prompt: str | None,
    settings: Settings,
) -> JobInput:
    """Decode the job's input images from Redis and rebuild its parameters model."""
    fields: list[str] = json.loads(record["inputs"])
    stored = cast(list[bytes], client.mget([input_key(job_id, field) for field in fields]) if fields else [])
    for field, data in zip(fields, stored, strict=True):
        if data is None:
            raise PipelineError(f"The {field} of this job has expired from storage")
    if len(fields) > 1 and sum(map(len, stored)) > PARALLEL_DECODE_BYTES:
        # Decoders release the GIL: a photo and its mask decode side by side.
        with ThreadPoolExecutor(len(fields)) as pool:
            decoded = list(pool.map(lambda data: open_image(data, settings.max_pixels), stored))
    else:  # small images: a thread pool would cost more than it saves (its start, ~1 ms a job)
        decoded = [open_image(data, settings.max_pixels) for data in stored]
    images = dict(zip(fields, decoded, strict=True))
    params, errors = validate_parameters(OPERATIONS[record["task_type"]], parameters)
    if errors:
        raise PipelineError(f"Invalid parameters: {errors}")
    return JobInput(images=images, parameters=params, prompt=prompt, settings=settings)


# -- worker heartbeat and the reconciler ---------------------------------------------------------
# The heartbeat lets /healthz and queue ETAs see live workers cheaply. The reconciler, run by
# whichever worker holds a short Redis lock, sends a job again when the worker process that ran
# it stopped beating (SIGKILL, OOM, a machine gone): Celery itself would only redeliver it after
# the broker's visibility timeout, an hour by default.
_stop_heartbeat = threading.Event()


@signals.worker_init.connect
def remember_main_pid(**kwargs: Any) -> None:
    global _main_pid
    _main_pid = os.getpid()


def reconcile(store: JobStore, celery: Any) -> None:
    """Send again (once) the running jobs whose worker process is gone, failing them the second time,
    and (once) the queued jobs whose message was lost in transit."""
    if not store.redis.set(RECONCILER_LOCK, "1", nx=True, ex=int(RECONCILE_EVERY * 2)):
        return
    pipe = store.redis.pipeline(transaction=False)
    for queue in QUEUES:
        store.forget_expired(pipe, queue, time.time())
    pipe.execute()
    for job_id in store.restore_unstarted(UNSTARTED_AFTER):
        log.warning("Job %s was fetched by a worker that died before starting it; queued again", job_id)
    rescue_orphans(store, celery)
    resend_lost(store, celery)
    reconcile_chains(store, celery)


def rescue_orphans(store: JobStore, celery: Any) -> None:
    """The running jobs whose worker process stopped beating: sent again once, failed the second time."""
    live = store.workers.live_processes()
    for job_id in store.running_jobs():
        record = store.record(job_id)
        if record is None or record.get("outcome"):
            store.finished(job_id)
            continue
        if record.get("worker") in live:
            continue
        store.finished(job_id)
        if int(record.get("attempts", "1")) >= MAX_ATTEMPTS:
            if store.claim_outcome(job_id, JobState.FAILURE) is None:
                celery.backend.mark_as_failure(
                    job_id, JobFailed("Worker lost: the job's worker died twice while running it")
                )
            continue
        log.warning("Job %s lost its worker %s; sending it again", job_id, record.get("worker"))
        store.requeue(job_id, record["queue"], "retrying after a worker was lost")
        store.redis.delete(celery.backend.get_key_for_task(job_id))  # its stale PROCESSING state
        send_again(celery, job_id, record)


def resend_lost(store: JobStore, celery: Any) -> None:
    """The queued jobs whose message is nowhere in Redis: sent again once, failed if lost again."""
    for job_id in store.find_unsent(QUEUES, UNSENT_AFTER):
        record = store.record(job_id)
        if record is None:
            continue
        if record.get("resent"):  # sent again once and lost again: end it, rather than leave it queued forever
            if store.claim_outcome(job_id, JobState.FAILURE) is None:
                store.dequeue(job_id, record["queue"])
                celery.backend.mark_as_failure(
                    job_id, JobFailed("Lost in transit: the job's message was lost twice on its way to a worker")
                )
            continue
        if not store.claim_resend(job_id, "sent again: its message was lost in transit"):
            continue
        log.warning("Job %s is queued but its message is nowhere in Redis (lost in transit); sending it again", job_id)
        try:
            send_again(celery, job_id, record)
        except Exception:
            store.redis.hdel(job_key(job_id), "resent")  # the next pass tries again
            raise


def send_again(celery: Any, job_id: str, record: dict[str, str]) -> None:
    """Publish the job's message again, rebuilt from its record: same task id, same arguments."""
    kwargs = {
        "task_type": record["task_type"],
        "parameters": json.loads(record.get("parameters", "{}")),
        "prompt": json.loads(record.get("prompt", "null")),
    }
    priority = record_level(record) or None  # its place in the owners' turns and behind single jobs
    celery.send_task(TASK_NAME, kwargs=kwargs, task_id=job_id, queue=record["queue"], priority=priority)


@signals.worker_ready.connect
def start_heartbeat(sender: Any = None, **kwargs: Any) -> None:
    from tasks.celery_app import make_celery

    hostname = sender.hostname
    queues = [queue.name for queue in sender.task_consumer.queues]
    settings = sender.app.conf.atelier_settings
    remember_stop_timeout(settings.stop_timeout)
    store = job_store(settings)
    process = worker_process(hostname)
    celery = make_celery(settings)  # its own connections: this thread publishes beside the worker
    models = ModelReporter(store.redis, settings, hostname, queues, process)

    def beat() -> None:
        last_reconcile = 0.0
        while not _stop_heartbeat.is_set():
            try:
                store.workers.heartbeat(hostname, queues, process)
                models.beat()  # what this worker has of each model, and the downloads asked of its queues
                if time.monotonic() - last_reconcile > RECONCILE_EVERY:
                    last_reconcile = time.monotonic()
                    reconcile(store, celery)
            except Exception as exc:  # Redis away: keep trying, the worker itself reconnects too
                log.debug("heartbeat failed: %s", exc)
            _stop_heartbeat.wait(HEARTBEAT_SECONDS)
        with contextlib.suppress(Exception):
            store.workers.forget_worker(hostname, queues, process)

    threading.Thread(target=beat, name="atelier-heartbeat", daemon=True).start()


@signals.worker_shutting_down.connect
def stop_heartbeat(**kwargs: Any) -> None:
    _stop_heartbeat.set()


__all__ = ["JobFailed", "run_operation"]
