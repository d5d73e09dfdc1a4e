"""``/api/v1/batches/``: many items through one operation; each item is an ordinary job."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from access import checked_user
from api.body import parse_batch
from api.deps import AppSettings, CallerOf, Jobs
from api.errors import invalid
from api.events import MEDIA_TYPE, changes_by_polling, stream
from api.schemas import BATCH_FORM, BATCH_NOT_FOUND, UNAVAILABLE, BatchRequest, BatchSubmitResponse, ErrorResponse
from api.submitting import batch_end, note_rate_window, submit_docs, submit_once, waited
from jobs import BatchStatus

router = APIRouter(prefix="/api/v1/batches", tags=["batches"])
CHUNK = 1 << 20


@router.post(
    "/",
    status_code=202,
    response_model=BatchSubmitResponse,
    **submit_docs(
        BatchStatus,
        "Invalid input; details name each field (items[3].image)",
        BatchRequest.model_json_schema(),
        BATCH_FORM,
    ),
)
async def submit_batch(request: Request, jobs: Jobs, settings: AppSettings, caller: CallerOf) -> Any:
    """Submit a batch: one operation, shared parameters, and up to ATELIER_MAX_BATCH_ITEMS items.

    JSON with ``items`` (base64 images, optional names), or multipart with several ``image`` files
    (or ``item_field`` naming another image field) or one ``archive`` zip. Every item is validated
    before anything is stored; each becomes a job with its own task id.
    """
    note_rate_window(
        request,
        jobs.admit(checked_user(request.scope), request.headers, request.client.host if request.client else None),
    )
    fields, items = await parse_batch(request, settings.max_upload_bytes, settings.max_batch_items)

    def submit() -> dict[str, Any]:  # in a thread: validation decodes some images
        answer = jobs.submit_batch(fields, items, caller)
        return {**answer, "message": f"{answer['task_type']} batch of {answer['total']} submitted successfully"}

    answer = await submit_once(request, jobs, (fields, items), submit)
    return await waited(
        request, answer, lambda seconds: batch_end(request, jobs, answer.body["batch_id"], seconds, caller)
    )


@router.get("/{batch_id}/", response_model=BatchStatus, responses={**BATCH_NOT_FOUND, **UNAVAILABLE})
def batch_status(batch_id: str, jobs: Jobs, caller: CallerOf) -> Any:
    """The batch's status: counts per state, overall progress, and each item's state and message."""
    return JSONResponse(jobs.batch_status(batch_id, caller).model_dump(mode="json"))


@router.post("/{batch_id}/cancel/", response_model=BatchStatus, responses={**BATCH_NOT_FOUND, **UNAVAILABLE})
def cancel_batch(batch_id: str, jobs: Jobs, caller: CallerOf) -> Any:
    """Cancel every unfinished item: queued ones never start, running ones stop at their next step."""
    return JSONResponse(jobs.cancel_batch(batch_id, caller).model_dump(mode="json"))


@router.get(
    "/{batch_id}/result/",
    responses={
        **BATCH_NOT_FOUND,
        **UNAVAILABLE,
        200: {"content": {"application/zip": {}}, "description": "The finished items' PNGs and manifest.json"},
        400: {"model": ErrorResponse, "description": "format is not zip"},
    },
)
def batch_result(batch_id: str, jobs: Jobs, caller: CallerOf, format: str = "zip") -> Any:
    """A zip of the items finished so far, named after the items (``shoe-01.png``; ``item-0007.png``
    without a name), and ``manifest.json`` with every item's name, task id, status and message."""
    if format != "zip":
        return invalid({"format": [f"format must be zip, got {format!r}"]})
    status, archive = jobs.batch_archive(batch_id, caller)
    filename = f"batch-{status.task_type}-{status.batch_id[:8]}.zip"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return StreamingResponse(_chunks(archive), media_type="application/zip", headers=headers)


def _chunks(archive: IO[bytes]) -> Iterator[bytes]:
    with archive:
        while chunk := archive.read(CHUNK):
            yield chunk


@router.get(
    "/{batch_id}/events",
    response_class=StreamingResponse,
    responses={
        **BATCH_NOT_FOUND,
        **UNAVAILABLE,
        200: {
            "content": {MEDIA_TYPE: {"schema": {"type": "string"}}},
            "description": "Server-Sent Events: `event: status`, `id: n`, `data: <the batch status JSON>` at "
            "each change; the stream ends once every item has ended",
        },
    },
)
async def batch_events(
    request: Request,
    batch_id: str,
    jobs: Jobs,
    caller: CallerOf,
    last_event_id: str | None = Header(
        default=None, alias="Last-Event-ID", description="Resume: ids go on from this one"
    ),
) -> Any:
    """The batch's status as a Server-Sent Events stream: an event whenever an item moves on."""
    first = await run_in_threadpool(jobs.batch_status, batch_id, caller)

    async def read() -> tuple[dict[str, Any], bool]:
        status = await run_in_threadpool(jobs.batch_status, first.batch_id)
        return status.model_dump(mode="json"), status.finished

    return stream(request, (first.model_dump(mode="json"), first.finished), changes_by_polling(read))
