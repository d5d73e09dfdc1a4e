"""Which engines' models the live workers have (``GET /api/v1/models/``, the Models tab, the tabs'
marks), and asking a queue's workers to download some (``POST /api/v1/models/download/``).

Rows come from the registry's declarations (under this process's settings) and from each live
worker's report (tasks/models.py), so a worker configured with another model still shows it."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from jobs.client import JobClient
from jobs.errors import redis_reachable
from pipelines.validation import InvalidSubmission
from settings import QUEUES
from tasks.celery_app import queue_for
from tasks.models import REQUEST_TTL, report_key, request_key

Download = Literal["auto", "manual", "none"]


class ModelRow(BaseModel):
    """One model of one engine, and where it can run."""

    operation: str
    engine: str
    model: str
    license: str
    size_bytes: int | None = Field(default=None, description="Bytes to download (as published), or on disk")
    download: Download = Field(description="auto: fetched on first use; manual: put in place by hand; none: no weights")
    queue: str
    default: bool = Field(description="The model the engine uses when a job names none")
    ready_on: list[str] = Field(default_factory=list, description="Live workers that have it and its library")
    missing_on: list[str] = Field(default_factory=list)
    loaded_on: list[str] = Field(default_factory=list, description="Live workers holding it in memory")
    notes: list[str] = Field(default_factory=list, description="Why it is missing where that is not the weights")


class WorkerDownload(BaseModel):
    request_id: str
    state: Literal["running", "done", "failed"]
    message: str
    done_bytes: int = 0
    total_bytes: int | None = None
    errors: list[str] = Field(default_factory=list)


class WorkerModels(BaseModel):
    worker: str
    queues: list[str]
    device: str
    auto_download: bool
    download: WorkerDownload | None = Field(default=None, description="The latest download asked of its queue")


class ModelsReport(BaseModel):
    models: list[ModelRow]
    workers: list[WorkerModels]


class DownloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    queue: str = Field(description="gpu or cpu: every live worker of the queue fetches what it lacks")
    models: list[str] | None = Field(
        default=None, description="Model names (GET /api/v1/models/); default: the queue's defaults"
    )


class DownloadAccepted(BaseModel):
    request_id: str
    queue: str
    models: list[str]
    workers: list[str] = Field(description="The queue's live workers now; each reports its progress")


def live_reports(client: JobClient) -> list[dict[str, Any]]:
    """The reports of the live worker processes, by worker name."""
    with redis_reachable():
        processes = sorted(client.store.workers.live_processes())
        raw = cast(list[bytes | None], client.store.redis.mget([report_key(p) for p in processes])) if processes else []
    return sorted((json.loads(data) for data in raw if data), key=lambda report: str(report["worker"]))


def models_report(client: JobClient) -> ModelsReport:
    """Each (operation, engine, model) with the live workers that have it, miss it or hold it in memory."""
    from pipelines.inventory import describe, entries

    settings = client.settings
    rows: dict[tuple[str, str, str], ModelRow] = {}
    for entry in entries(settings):
        queue = queue_for(entry.operation, settings, {"engine": entry.engine})
        rows[(entry.operation, entry.engine, entry.model.name)] = ModelRow(**describe(entry, settings), queue=queue)
    reports = live_reports(client)
    for report in reports:
        for item in report["models"]:
            key = (item["operation"], item["engine"], item["model"])
            if key not in rows:  # a model only that worker's settings name
                rows[key] = ModelRow(**{**item, "queue": report["queues"][0]})
            place(rows[key], item, report["worker"])
    workers = [WorkerModels(**report) for report in reports]
    return ModelsReport(models=list(rows.values()), workers=workers)


def place(row: ModelRow, item: dict[str, Any], worker: str) -> None:
    ready = item["present"] and item["library_installed"]
    (row.ready_on if ready else row.missing_on).append(worker)
    if item["loaded"]:
        row.loaded_on.append(worker)
    if not item["library_installed"]:
        row.notes.append(f"{item['library']} is not installed on {worker}")
    if row.size_bytes is None and item.get("size_on_disk"):
        row.size_bytes = item["size_on_disk"]


def request_download(client: JobClient, request: DownloadRequest) -> DownloadAccepted:
    """Ask every live worker of ``request.queue`` (and any starting within the hour) to fetch what it lacks of
    ``request.models``; :class:`InvalidSubmission` for an unknown queue or model."""
    if request.queue not in QUEUES:
        raise InvalidSubmission({"queue": [f"Unknown queue {request.queue!r}; queues: {', '.join(QUEUES)}"]})
    rows = [row for row in models_report(client).models if row.queue == request.queue and row.download == "auto"]
    known = list(dict.fromkeys(row.model for row in rows))
    names = list(dict.fromkeys(request.models)) if request.models else [row.model for row in rows if row.default]
    unknown = [name for name in names if name not in known]
    if unknown:
        problem = f"{', '.join(map(repr, unknown))} cannot be downloaded for the {request.queue} queue"
        raise InvalidSubmission({"models": [f"{problem}; available: {', '.join(known) or 'none'}"]})
    names = list(dict.fromkeys(names))
    request_id = str(uuid.uuid4())
    body = {"id": request_id, "queue": request.queue, "models": names, "requested_at": time.time()}
    with redis_reachable():
        client.store.redis.set(request_key(request.queue), json.dumps(body), ex=REQUEST_TTL)
        workers = client.store.workers.live((request.queue,))[request.queue]
    return DownloadAccepted(request_id=request_id, queue=request.queue, models=names, workers=workers)
