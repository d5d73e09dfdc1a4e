"""``/api/v1/models/``: which engines' models the live workers have, and downloads for a queue's workers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.body import parse_json, read_body
from api.deps import AppSettings, CallerOf, Jobs
from api.errors import error, invalid
from api.schemas import UNAVAILABLE, ErrorResponse
from jobs.models import DownloadAccepted, DownloadRequest, ModelsReport, models_report, request_download

router = APIRouter(prefix="/api/v1/models", tags=["models"])


@router.get("/", response_model=ModelsReport, responses=UNAVAILABLE)
def list_models(jobs: Jobs) -> Any:
    """Each operation's engines and their models (licence, size, how they are fetched), with the live
    workers that have each (``ready_on``), lack it (``missing_on``) or hold it in memory (``loaded_on``);
    ``workers`` adds each worker's device and its latest download."""
    return models_report(jobs)


@router.post(
    "/download/",
    status_code=202,
    response_model=DownloadAccepted,
    responses={
        400: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        415: {"model": ErrorResponse},
        **UNAVAILABLE,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": DownloadRequest.model_json_schema()}},
        }
    },
)
async def download_models(request: Request, jobs: Jobs, caller: CallerOf, settings: AppSettings) -> Any:
    """Ask every live worker of ``queue`` (and any that starts within the hour) to fetch what it lacks of
    ``models`` (default: the queue's default models); each worker's progress shows in ``GET /api/v1/models/``.
    With access control on, only ATELIER_ADMINS may."""
    if not caller.sees_all:
        return error(403, "Forbidden", message="Only the users in ATELIER_ADMINS may start model downloads")
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return error(415, "Unsupported media type", message="Send application/json")
    fields = parse_json(await read_body(request, settings.max_upload_bytes))
    try:
        asked = DownloadRequest.model_validate(fields)
    except ValidationError as exc:
        return invalid(_details(exc))
    accepted = await run_in_threadpool(request_download, jobs, asked)
    return JSONResponse(accepted.model_dump(), status_code=202)


def _details(exc: ValidationError) -> dict[str, list[str]]:
    details: dict[str, list[str]] = {}
    for problem in exc.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "body"
        details.setdefault(field, []).append(problem["msg"])
    return details
