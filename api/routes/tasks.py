"""``/api/v1/tasks/``: submit a job, follow it, fetch its result, cancel it."""

from __future__ import annotations

import base64
import re
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from access import checked_user
from api.body import parse_submission
from api.deps import AppSettings, CallerOf, Jobs
from api.errors import invalid
from api.events import MEDIA_TYPE, stream
from api.schemas import (
    NOT_FOUND,
    SUBMIT_FORM,
    UNAVAILABLE,
    CancelResponse,
    ErrorResponse,
    ResultResponse,
    StatusResponse,
    SubmitRequest,
    SubmitResponse,
    TaskList,
)
from api.submitting import job_end, note_rate_window, submit_docs, submit_once, waited
from jobs import WAIT_MAX
from jobs.owners import MAX_LIST
from jobs.status import JobStatus

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])


def _seconds(text: str) -> float:
    """Plain decimal seconds ("30", "0.5"), or -1 for anything else (so that it fails the range check)."""
    return float(text) if re.fullmatch(r"[0-9]{1,6}(\.[0-9]{0,6})?|\.[0-9]{1,6}", text, re.ASCII) else -1.0


@router.post(
    "/submit/",
    status_code=202,
    response_model=SubmitResponse,
    **submit_docs(
        StatusResponse, "Invalid input; details name each field", SubmitRequest.model_json_schema(), SUBMIT_FORM
    ),
)
async def submit_task(request: Request, jobs: Jobs, settings: AppSettings, caller: CallerOf) -> Any:
    """Submit a job. JSON with base64 images, or multipart with image files."""
    # Before reading the body: a client over its limit costs one Redis call.
    note_rate_window(
        request,
        jobs.admit(checked_user(request.scope), request.headers, request.client.host if request.client else None),
    )
    fields, files = await parse_submission(request, settings.max_upload_bytes)

    submitted: list[JobStatus] = []

    def submit() -> dict[str, Any]:  # in a thread: validation decodes some images
        status = jobs.submit(fields, files, caller)
        submitted.append(status)
        return {"task_id": status.task_id, "status": status.status, "message": status.message}

    answer = await submit_once(request, jobs, (fields, files), submit)
    return await waited(request, answer, lambda seconds: job_end(request, jobs, submitted[0], seconds, caller))


@router.get(
    "/{task_id}/status/",
    response_model=StatusResponse,
    response_model_exclude_none=True,
    responses={
        **NOT_FOUND,
        **UNAVAILABLE,
        400: {"model": ErrorResponse, "description": "wait is not a number from 0 to 30"},
    },
)
async def task_status(
    request: Request,
    task_id: str,
    jobs: Jobs,
    caller: CallerOf,
    wait: str | None = Query(
        default=None,
        description=f"Seconds, a number from 0 to {WAIT_MAX:g}: answer at the job's next change "
        "(progress, a new message, its place in the queue, the end) or after this long",
        examples=["30"],
    ),
) -> Any:
    """A job's state, progress and message; its queue position while queued.

    With ``?wait=S`` (seconds, up to 30) the answer waits until the job's status changes
    (progress, a new message, the end) or S seconds pass: a script hears of each change at
    once, without polling fast.
    """
    seconds = 0.0
    if wait is not None:
        seconds = _seconds(wait)
        if not 0 <= seconds <= WAIT_MAX:
            return invalid({"wait": [f"wait must be a number of seconds from 0 to {WAIT_MAX:g}, got {wait!r}"]})

    async def gone() -> bool:  # the client left, or the server is shutting down
        return bool(request.app.state.stopping()) or await request.is_disconnected()

    status = await (
        jobs.watch(task_id, seconds, gone, caller) if seconds else run_in_threadpool(jobs.status, task_id, caller)
    )
    # A response, not the model: the model above documents it, without re-validating every poll.
    return JSONResponse(status.as_dict())


@router.get(
    "/{task_id}/result/",
    response_model=ResultResponse,
    response_model_exclude_none=True,
    responses={
        **NOT_FOUND,
        **UNAVAILABLE,
        200: {"content": {"image/png": {}}, "description": "JSON, or the PNG itself with ?format=png"},
        409: {"model": ErrorResponse, "description": "Not finished, failed or cancelled"},
    },
)
def task_result(task_id: str, jobs: Jobs, caller: CallerOf, format: str = "json") -> Any:
    """The finished image: JSON with base64 PNG, or the PNG bytes with ``?format=png``."""
    if format not in ("json", "png"):
        return invalid({"format": [f"format must be json or png, got {format!r}"]})
    status, result, png = jobs.result(task_id, caller)
    if format == "png":
        return Response(png, media_type="image/png")
    job_result: dict[str, Any] = {
        "status": "SUCCESS",
        "image_data": base64.b64encode(png).decode(),
        "metadata": {
            **result.get("metadata", {}),
            "width": result.get("width"),
            "height": result.get("height"),
            "worker": result.get("worker"),
        },
    }
    if result.get("prompt_used") is not None:
        job_result["prompt_used"] = result["prompt_used"]
    return {"task_id": status.task_id, "status": "SUCCESS", "result": job_result}


@router.post(
    "/{task_id}/cancel/",
    response_model=CancelResponse,
    responses={
        **NOT_FOUND,
        **UNAVAILABLE,
        409: {"model": ErrorResponse, "description": "Already finished; result kept"},
    },
)
def cancel_task(task_id: str, jobs: Jobs, caller: CallerOf) -> Any:
    """Cancel a queued job, or stop a running one at its next step."""
    status = jobs.cancel(task_id, caller)
    return {"task_id": status.task_id, "status": status.status, "message": "Task cancelled"}


@router.get(
    "/{task_id}/events",
    response_class=StreamingResponse,
    responses={
        **NOT_FOUND,
        **UNAVAILABLE,
        200: {
            "content": {MEDIA_TYPE: {"schema": {"type": "string"}}},
            "description": "Server-Sent Events: `event: status`, `id: n`, `data: <the status JSON>` at each "
            "change; a comment every 15 s while nothing changes; the stream ends after the final state",
        },
    },
)
async def task_events(
    request: Request,
    task_id: str,
    jobs: Jobs,
    caller: CallerOf,
    last_event_id: str | None = Header(
        default=None, alias="Last-Event-ID", description="Resume: ids go on from this one"
    ),
) -> Any:
    """The job's status as a Server-Sent Events stream: one event per change (its place in the queue,
    progress and message, the end), woken by the same notifications as ``?wait=``."""
    first = await run_in_threadpool(jobs.status, task_id, caller)

    async def gone() -> bool:
        return bool(request.app.state.stopping()) or await request.is_disconnected()

    async def next_change(seconds: float) -> tuple[dict[str, Any], bool]:
        status = await jobs.watch(first.task_id, seconds, gone)
        return status.as_dict(), status.finished

    return stream(request, (first.as_dict(), first.finished), next_change)


@router.get("/", response_model=TaskList, responses={**UNAVAILABLE, 400: {"model": ErrorResponse}})
def list_tasks(
    jobs: Jobs,
    caller: CallerOf,
    limit: int = Query(default=50, ge=1, le=MAX_LIST, description="Entries per page"),
    cursor: str | None = Query(default=None, description="next_cursor of the page before"),
) -> Any:
    """The caller's jobs, chains and batch items still within the TTL, newest first (with access control
    off, or for an admin: everyone's), a page at a time."""
    try:
        tasks, next_cursor = jobs.history(caller, limit, cursor)
    except ValueError as exc:
        return invalid({"cursor": [str(exc)]})
    return JSONResponse({"tasks": tasks, "next_cursor": next_cursor})
