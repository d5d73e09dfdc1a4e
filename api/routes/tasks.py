"""``/api/v1/tasks/``: submit a job, follow it, fetch its result, cancel it."""

from __future__ import annotations

import base64
import re
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from access import checked_user
from api.body import parse_submission
from api.deps import AppSettings, Jobs
from api.errors import invalid
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
)
from jobs import WAIT_MAX

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])


def _seconds(text: str) -> float:
    """Plain decimal seconds ("30", "0.5"), or -1 for anything else (so that it fails the range check)."""
    return float(text) if re.fullmatch(r"[0-9]{1,6}(\.[0-9]{0,6})?|\.[0-9]{1,6}", text, re.ASCII) else -1.0


@router.post(
    "/submit/",
    status_code=202,
    response_model=SubmitResponse,
    responses={
        400: {"model": ErrorResponse, "description": "Invalid input; details name each field"},
        413: {"model": ErrorResponse},
        415: {"model": ErrorResponse},
        429: {"model": ErrorResponse, "description": "Over ATELIER_RATE_LIMIT; see the Retry-After header"},
        **UNAVAILABLE,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": SubmitRequest.model_json_schema()},
                "multipart/form-data": {"schema": SUBMIT_FORM},
            },
        }
    },
)
async def submit_task(request: Request, jobs: Jobs, settings: AppSettings) -> Any:
    """Submit a job. JSON with base64 images, or multipart with image files."""
    # Before reading the body: a client over its limit costs one Redis call.
    jobs.admit(checked_user(request.scope), request.headers, request.client.host if request.client else None)
    fields, files = await parse_submission(request, settings.max_upload_bytes)
    # Validation decodes some images: off the event loop, so other requests are not held up.
    status = await run_in_threadpool(jobs.submit, fields, files)
    return JSONResponse({"task_id": status.task_id, "status": status.status, "message": status.message}, 202)


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

    status = await (jobs.watch(task_id, seconds, gone) if seconds else run_in_threadpool(jobs.status, task_id))
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
def task_result(task_id: str, jobs: Jobs, format: str = "json") -> Any:
    """The finished image: JSON with base64 PNG, or the PNG bytes with ``?format=png``."""
    if format not in ("json", "png"):
        return invalid({"format": [f"format must be json or png, got {format!r}"]})
    status, result, png = jobs.result(task_id)
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
def cancel_task(task_id: str, jobs: Jobs) -> Any:
    """Cancel a queued job, or stop a running one at its next step."""
    status = jobs.cancel(task_id)
    return {"task_id": status.task_id, "status": status.status, "message": "Task cancelled"}
