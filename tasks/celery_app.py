"""The Celery application: Redis broker and backend, JSON only, routes from the registry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery, states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError

from pipelines import OPERATIONS
from settings import Settings
from tasks.store import PRIORITY_SEP, PRIORITY_STEPS

TASK_NAME = "atelier.run_operation"


def queue_for(task_type: str, settings: Settings, parameters: Mapping[str, Any] | None = None) -> str:
    """The registry's queue for ``task_type`` (or the queue of the engine ``parameters`` name, where
    that engine runs elsewhere), unless ``ATELIER_QUEUES`` overrides it."""
    engine = (parameters or {}).get("engine")
    return settings.queues.get(task_type) or OPERATIONS[task_type].queue_of(engine if isinstance(engine, str) else None)


class ResultBackend(RedisBackend):  # type: ignore[misc]  # celery ships no types
    """Celery's Redis result backend, without the result subscription ``send_task`` opens for each job.

    Nothing here blocks on ``AsyncResult.get()`` (a status reads the result key; ``?wait=`` has its
    own listener), so that subscription only cost each submit a round trip's worth of time and left
    its replies unread on the web process's connection. ``get()`` still subscribes for itself.
    """

    def on_task_call(self, producer: Any, task_id: str) -> None:
        pass

    def result_state(
        self, task_id: str | bytes, result: Any, request: Any, state: str = states.SUCCESS, traceback: Any = None
    ) -> dict[str, Any]:
        """The state Celery stores for a job's ``state`` (SUCCESS: with ``result``)."""
        meta: dict[str, Any] = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = task_id.decode() if isinstance(task_id, bytes) else task_id
        return meta

    def _store_result(
        self, task_id: str, result: Any, state: str, traceback: Any = None, request: Any = None, **kwargs: Any
    ) -> Any:
        """Celery's write of a job's state, without the read before it. Celery reads the state first so
        that a duplicate run cannot overwrite a SUCCESS; here a job's end is claimed once, in Redis,
        before any final state is written (tasks/claims.py, and a cancel's claim), and progress is
        written by a script that checks that claim. The read would only cost every write a round trip.
        A job's SUCCESS state is stored by the script that claims its end (``state_stored``): not again."""
        if state == states.SUCCESS and getattr(request, "state_stored", False):
            return result
        meta = self.result_state(task_id, result, request, state, traceback)
        try:
            self._set_with_state(self.get_key_for_task(task_id), self.encode(meta), state)
        except BackendStoreError as exc:
            raise BackendStoreError(str(exc), state=state, task_id=task_id) from exc
        return result


def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``; the web process and the workers build theirs alike."""
    backend = f"{__name__}:ResultBackend+{settings.broker_url}"  # "class+url": Celery's form for a backend class
    # jobs.webhook_worker: each worker's main process also sends webhooks (it reads statuses as the
    # job client does, hence its place in jobs/, named here rather than imported: jobs imports tasks).
    app = Celery("atelier", broker=settings.broker_url, backend=backend, include=["tasks.run", "jobs.webhook_worker"])

    def route(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> Any:
        if name == TASK_NAME and kwargs and kwargs.get("task_type") in OPERATIONS:
            return {"queue": queue_for(kwargs["task_type"], settings, kwargs.get("parameters"))}
        return None

    transport = {
        "visibility_timeout": settings.visibility_timeout,
        # The lists a queue's messages wait in, one per priority (tasks.store.broker_lists reads them).
        "priority_steps": list(PRIORITY_STEPS),
        "sep": PRIORITY_SEP,
        "socket_connect_timeout": 1.0,
        "socket_timeout": 5.0,
    }
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        result_expires=settings.result_ttl,
        result_extended=False,
        task_routes=(route,),
        task_default_queue="cpu",
        task_queues=None,
        task_create_missing_queues=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # No STARTED state: a job's first progress ("Starting …", 0 %) is published as it starts, and
        # a job taken off its queue reads as starting until then; a second write would cost each job
        # a read and a write more.
        task_track_started=False,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        task_soft_time_limit=settings.job_time_limit,
        task_time_limit=settings.job_time_limit + 30,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=1.0,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        # Task events are for Flower, which switches them on in every worker it sees (its
        # enable_events broadcast); without it they would cost each job three publishes from the
        # worker's main process (~0.9 ms of CPU). A "sent" event from the web process would cost
        # every submit another publish (~0.3 ms).
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    app.conf.atelier_settings = settings
    return app
