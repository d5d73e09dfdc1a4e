"""A worker's models, beside its heartbeat: the report of what it has, what its pool processes
loaded, and the downloads the Models tab asks of its queues.

Redis keys: ``atelier:models:report:<process>`` (JSON, rewritten every beat, expiring like the
heartbeat), ``atelier:models:loaded:<process>`` (load key → pool process id, written by the pool
processes as they load), ``atelier:models:request:<queue>`` (the latest download asked of a queue:
every worker of the queue, and any that starts within the hour, fetches what it lacks of it).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any, cast

import redis
from celery import signals

from pipelines.base import PipelineError
from pipelines.downloads import Transfer
from pipelines.inventory import find_models, worker_report
from pipelines.models import load_hooks
from settings import Settings
from tasks.celery_app import queue_for
from tasks.store import PREFIX, connect

log = logging.getLogger(__name__)
REPORT_TTL = 15  # seconds: a report outlives a missed beat or two, not a dead worker
LOADED_TTL = 3600  # refreshed every beat while the worker lives
REQUEST_TTL = 3600


def report_key(process: str) -> str:
    return f"{PREFIX}:models:report:{process}"


def loaded_key(process: str) -> str:
    return f"{PREFIX}:models:loaded:{process}"


def request_key(queue: str) -> str:
    return f"{PREFIX}:models:request:{queue}"


def serves(settings: Settings, queues: list[str]) -> Any:
    """``include(operation, engine)``: whether jobs for that engine come to ``queues``."""
    return lambda operation, engine: queue_for(operation, settings, {"engine": engine}) in queues


class ModelReporter:
    """Called by the heartbeat thread each beat: publishes the report and starts asked-for downloads."""

    def __init__(self, client: redis.Redis, settings: Settings, hostname: str, queues: list[str], process: str) -> None:
        self.redis, self.settings, self.queues = client, settings, queues
        self.hostname, self.process = hostname, process
        self.downloads = QueueDownloads(settings, queues)

    def beat(self) -> None:
        try:
            asked = cast(list[bytes | None], self.redis.mget([request_key(queue) for queue in self.queues]))
            self.downloads.take([json.loads(raw) for raw in asked if raw])
            self.publish()
        except Exception as exc:  # Redis away, a file vanishing mid-look: the next beat tries again
            log.debug("model report failed: %s", exc)

    def publish(self) -> None:
        report = worker_report(self.settings, serves(self.settings, self.queues), self.loaded())
        report |= {
            "worker": self.hostname,
            "process": self.process,
            "queues": self.queues,
            "updated_at": time.time(),
            "download": dict(self.downloads.state) if self.downloads.state else None,  # a copy: its thread updates it
        }
        self.redis.set(report_key(self.process), json.dumps(report), ex=REPORT_TTL)

    def loaded(self) -> set[str]:
        """The load keys this worker's live pool processes hold (a replaced process's are dropped)."""
        key = loaded_key(self.process)
        held = cast(dict[bytes, bytes], self.redis.hgetall(key))
        gone = [name for name, pid in held.items() if not _alive(int(pid))]
        if gone:
            self.redis.hdel(key, *gone)
        if held:
            self.redis.expire(key, LOADED_TTL)
        return {name.decode() for name in held if name not in gone}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class QueueDownloads:
    """Fetches what a download request names and this worker lacks, one request at a time, in a thread
    of the worker's main process (the pool processes keep running jobs)."""

    def __init__(self, settings: Settings, queues: list[str]) -> None:
        self.settings, self.queues = settings, queues
        self.handled: set[str] = set()
        self.state: dict[str, Any] | None = None
        self.thread: threading.Thread | None = None

    def take(self, requests: list[dict[str, Any]]) -> None:
        if self.thread is not None and self.thread.is_alive():
            return
        for request in requests:
            if request.get("id") not in self.handled:
                self.handled.add(request["id"])
                self.state = {
                    "request_id": request["id"],
                    "state": "running",
                    "message": "Starting",
                    "done_bytes": 0,
                    "total_bytes": None,
                    "errors": [],
                }
                self.thread = threading.Thread(target=self.run, args=(request,), name="model-download", daemon=True)
                self.thread.start()
                return

    def run(self, request: dict[str, Any]) -> None:
        assert self.state is not None
        state = self.state
        try:
            models = find_models(list(request.get("models") or []), self.settings, serves(self.settings, self.queues))
        except PipelineError as exc:
            models, state["errors"] = [], [str(exc)]
        for model in models:
            if model.location(self.settings) is not None or model.download_kind(self.settings) != "auto":
                continue

            def show(transfer: Transfer) -> None:
                state.update(message=transfer.message(), done_bytes=transfer.done, total_bytes=transfer.total)

            try:
                model.fetch(self.settings, show)
            except Exception as exc:  # DownloadFailed, ModelUnavailable, a full disk: reported, then the next
                state["errors"].append(f"{model.name}: {exc}")
        failed = bool(state["errors"])
        state.update(state="failed" if failed else "done", message="; ".join(state["errors"]) or "Done")


@signals.worker_process_init.connect
def publish_loads(sender: Any = None, **kwargs: Any) -> None:
    """In each pool process: record every model it loads, for its worker's report to say "loaded"."""
    from tasks import get_app
    from tasks.run import worker_process

    settings: Settings = get_app().conf.atelier_settings
    client = connect(settings.broker_url)
    key = loaded_key(worker_process(str(sender)))

    def record(load_key: str) -> None:
        try:
            client.hset(key, load_key, os.getpid())
            client.expire(key, LOADED_TTL)
        except redis.exceptions.RedisError as exc:  # the job goes on; the report misses one load
            log.warning("could not record a model load: %s", exc)

    load_hooks.append(record)
