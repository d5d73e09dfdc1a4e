"""The one generic Celery task: fetch inputs, run the operation, report progress, store the output.

Like a web view, it handles transport and state; the work itself lives in ``pipelines/``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import Any

from celery import Task, signals
from celery.exceptions import Ignore, SoftTimeLimitExceeded

from pipelines import OPERATIONS
from pipelines.base import JobCancelled, JobInput, PipelineError
from pipelines.images import ImageRejected, encode_png, open_image
from pipelines.validation import validate_parameters
from settings import Settings
from tasks import app
from tasks.celery_app import TASK_NAME
from tasks.store import OUTCOME_FAILURE, OUTCOME_SUCCESS, JobStore, connect, output_key

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 2.0


class JobFailed(Exception):
    """A job failure with a message meant for the user."""


def job_store(settings: Settings) -> JobStore:
    return JobStore(connect(settings.broker_url), settings.result_ttl)


class ProgressReporter:
    """The pipeline's ``progress(fraction, message)``: publishes PROCESSING, raises on cancel."""

    def __init__(self, task: Task, store: JobStore, job_id: str) -> None:
        self.task, self.store, self.job_id = task, store, job_id
        self.percent = 0
        self.touched = time.monotonic()
        self.touch_every = min(30.0, store.ttl / 3)  # a running job's keys must not expire under it

    def __call__(self, fraction: float, message: str) -> None:
        if self.store.is_cancelled(self.job_id):
            raise JobCancelled(self.job_id)
        if time.monotonic() - self.touched > self.touch_every:
            self.store.touch(self.job_id)
            self.touched = time.monotonic()
        # Progress never goes backwards, whatever an engine reports.
        self.percent = max(self.percent, round(min(max(fraction, 0.0), 1.0) * 100))
        meta = {"progress": self.percent, "message": message, "updated_at": time.time()}
        self.task.update_state(state="PROCESSING", meta=meta)


@app.task(bind=True, name=TASK_NAME, throws=(JobFailed,))  # expected failures: logged without a traceback
def run_operation(self: Task, task_type: str, parameters: dict[str, Any], prompt: str | None = None) -> dict[str, Any]:
    """Run job ``self.request.id`` of ``task_type``; its images are read from Redis by job id."""
    settings: Settings = self.app.conf.atelier_settings
    store = job_store(settings)
    job_id: str = self.request.id
    record = store.record(job_id)
    if record is None:
        log.warning("Job %s expired before it ran; dropping it", job_id)
        raise Ignore()
    if not store.mark_started(job_id, record["queue"]):
        log.warning("Job %s expired as it started; dropping it", job_id)
        raise Ignore()
    if store.is_cancelled(job_id):
        self.backend.mark_as_revoked(job_id, reason="cancelled before it started")
        raise Ignore()

    operation = OPERATIONS[task_type]
    progress = ProgressReporter(self, store, job_id)
    started = time.perf_counter()
    try:
        progress(0.0, f"Starting {operation.title.lower()}")
        job = load_job(store, job_id, record, parameters, prompt, settings)
        output = operation.run(job, progress)
        if store.is_cancelled(job_id):
            raise JobCancelled(job_id)
    except JobCancelled:
        self.backend.mark_as_revoked(job_id, reason="cancelled")
        raise Ignore() from None
    except SoftTimeLimitExceeded:
        store.claim_outcome(job_id, OUTCOME_FAILURE)
        raise JobFailed(f"The job exceeded the time limit of {settings.job_time_limit} s") from None
    except (PipelineError, ImageRejected) as exc:
        store.claim_outcome(job_id, OUTCOME_FAILURE)
        raise JobFailed(str(exc)) from None
    except Exception as exc:
        log.exception("Job %s (%s) failed", job_id, task_type)
        store.claim_outcome(job_id, OUTCOME_FAILURE)
        raise JobFailed(f"{task_type} failed: {type(exc).__name__}: {exc}") from exc

    runtime = time.perf_counter() - started
    all_parameters = job.parameters.model_dump(mode="json")
    metadata = {"operation": task_type, "parameters": all_parameters, **output.metadata}
    provenance = {"Software": "Atelier", "atelier:operation": task_type, "atelier:parameters": all_parameters}
    if output.prompt_used or prompt:
        provenance["atelier:prompt"] = output.prompt_used or prompt
    png = encode_png(output.image, provenance)
    if store.claim_outcome(job_id, OUTCOME_SUCCESS) is not None:  # cancelled in the last instant
        self.backend.mark_as_revoked(job_id, reason="cancelled")
        raise Ignore()
    if not store.store_output(job_id, png, task_type, record["queue"], runtime):
        log.warning("Job %s expired while it ran; its result is dropped", job_id)
        raise Ignore()
    result: dict[str, Any] = {
        "image_key": output_key(job_id),
        "width": output.image.width,
        "height": output.image.height,
        "bytes": len(png),
        "worker": self.request.hostname,
        "metadata": {**metadata, "runtime": round(runtime, 4)},
    }
    if output.prompt_used or prompt:
        result["prompt_used"] = output.prompt_used or prompt
    return result


def load_job(
    store: JobStore,
    job_id: str,
    record: dict[str, str],
    parameters: dict[str, Any],
    prompt: str | None,
    settings: Settings,
) -> JobInput:
    """Decode the job's input images from Redis and rebuild its parameters model."""
    images = {}
    for field in json.loads(record["inputs"]):
        data = store.input_image(job_id, field)
        if data is None:
            raise PipelineError(f"The {field} of this job has expired from storage")
        images[field] = open_image(data, settings.max_pixels)
    params, errors = validate_parameters(OPERATIONS[record["task_type"]], parameters)
    if errors:
        raise PipelineError(f"Invalid parameters: {errors}")
    return JobInput(images=images, parameters=params, prompt=prompt)


# -- worker heartbeat: lets /healthz and queue ETAs see live workers per queue, cheaply -----
_stop_heartbeat = threading.Event()


@signals.worker_ready.connect
def start_heartbeat(sender: Any = None, **kwargs: Any) -> None:
    hostname = sender.hostname
    queues = [queue.name for queue in sender.task_consumer.queues]
    store = job_store(sender.app.conf.atelier_settings)

    def beat() -> None:
        while not _stop_heartbeat.is_set():
            try:
                store.heartbeat(hostname, queues)
            except Exception as exc:  # Redis away: keep trying, the worker itself reconnects too
                log.debug("heartbeat failed: %s", exc)
            _stop_heartbeat.wait(HEARTBEAT_SECONDS)
        with contextlib.suppress(Exception):
            store.forget_worker(hostname, queues)

    threading.Thread(target=beat, name="atelier-heartbeat", daemon=True).start()


@signals.worker_shutting_down.connect
def stop_heartbeat(**kwargs: Any) -> None:
    _stop_heartbeat.set()


__all__ = ["JobFailed", "run_operation"]
