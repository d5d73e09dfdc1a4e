"""The REST API (``/api/v1``) and ``/healthz``, on the same FastAPI app that serves the page."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import redis
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from kombu.exceptions import OperationalError
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from access import RequireAuth
from jobs import WAIT_MAX, JobClient, JobConflict, JobNotFound, RateLimited, ServiceUnavailable, get_client
from pipelines import OPERATIONS
from pipelines.base import IMAGE_FIELDS
from pipelines.style_transfer import STYLE_PRESETS
from pipelines.validation import InvalidSubmission
from settings import Settings, get_settings

ASSETS = Path(__file__).parent / "assets"


# -- schemas (for /openapi.json and generated clients) ----------------------------------------
class SubmitRequest(BaseModel):
    task_type: str = Field(description=f"One of: {', '.join(OPERATIONS)}")
    prompt: str | None = Field(default=None, max_length=5000)
    image: str | None = Field(default=None, description="Base64 PNG/JPEG/WebP; a data: prefix is allowed")
    target_image: str | None = Field(default=None, description="face_swap: the photo whose faces are replaced")
    mask: str | None = Field(default=None, description="object_removal: white = remove, same size as image")
    style_image: str | None = Field(default=None, description="style_transfer: a picture to take the style from")
    parameters: dict[str, Any] | None = Field(default=None, description="Operation parameters")


class SubmitResponse(BaseModel):
    task_id: str
    status: str = "PENDING"
    message: str


class StatusResponse(BaseModel):
    task_id: str
    status: str = Field(description="PENDING, PROCESSING, SUCCESS, FAILURE or REVOKED")
    progress: int = Field(ge=0, le=100)
    message: str
    result_available: bool
    task_type: str
    queue: str
    position: int | None = Field(default=None, description="While PENDING: 1 = next to run")
    eta_seconds: float | None = Field(default=None, description="While PENDING: estimated seconds until it starts")
    updated_at: float | None = Field(default=None, description="While PROCESSING: when the worker published it")
    preview: str | None = Field(
        default=None,
        description="While PROCESSING, for engines that publish one: a small base64 PNG of the work so far",
    )


class JobResult(BaseModel):
    status: str = "SUCCESS"
    image_data: str = Field(description="Base64 PNG")
    prompt_used: str | None = None
    metadata: dict[str, Any]


class ResultResponse(BaseModel):
    task_id: str
    status: str = "SUCCESS"
    result: JobResult


class CancelResponse(BaseModel):
    task_id: str
    status: str = "REVOKED"
    message: str


class ErrorResponse(BaseModel):
    error: str
    message: str | None = None
    details: dict[str, list[str]] | None = None
    status: str | None = None
    task_id: str | None = None
    retry_after: int | None = Field(default=None, description="429: seconds until the client may submit again")


class QueueHealth(BaseModel):
    workers: list[str] = Field(description="Live workers consuming this queue")
    waiting: int = Field(description="Jobs waiting in this queue")


class HealthResponse(BaseModel):
    status: str = Field(description="ok, or unavailable (with 503)")
    redis: dict[str, Any] = Field(description="reachable, latency_ms")
    queues: dict[str, QueueHealth]


class StylePresetInfo(BaseModel):
    name: str
    title: str
    engine: str
    thumbnail_url: str


ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown, malformed or expired task id"},
    503: {"model": ErrorResponse, "description": "Redis unreachable"},
}


def error(status_code: int, error: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"error": error, **{key: value for key, value in extra.items() if value is not None}}
    return JSONResponse(body, status_code=status_code, headers=headers)


def _seconds(text: str) -> float:
    """Plain decimal seconds ("30", "0.5"), or -1 for anything else (so that it fails the range check)."""
    return float(text) if re.fullmatch(r"[0-9]{1,6}(\.[0-9]{0,6})?|\.[0-9]{1,6}", text, re.ASCII) else -1.0


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def not_found(task_id: str) -> JSONResponse:
    shown = task_id if len(task_id) <= 80 else task_id[:80] + "…"
    return error(404, "Task not found", task_id=shown, message="Unknown or expired task id")


# -- reading the submit body -------------------------------------------------------------------
class BodyError(Exception):
    def __init__(self, response: JSONResponse) -> None:
        self.response = response


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) past ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyError(too_large(limit))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyError(too_large(limit))
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # let request.form() parse what was read
    return body


def too_large(limit: int) -> JSONResponse:
    megabytes = round(limit / 2**20, 2)
    return error(413, "Payload too large", message=f"The request body is over the limit of {megabytes:g} MB")


async def parse_submission(request: Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    limit = get_settings().max_upload_bytes
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/json", "multipart/form-data"):
        raise BodyError(error(415, "Unsupported media type", message="Send application/json or multipart/form-data"))
    body = await read_body(request, limit)
    if content_type == "application/json":
        try:
            fields = json.loads(body, parse_constant=_no_constants)
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise BodyError(invalid({"body": [f"Malformed JSON: {exc}"]})) from None
        except RecursionError:
            raise BodyError(invalid({"body": ["Malformed JSON: nested too deeply"]})) from None
        if not isinstance(fields, dict):
            raise BodyError(invalid({"body": ["The body must be a JSON object"]}))
        return fields, {}
    try:
        form = await request.form(max_part_size=limit, max_files=len(IMAGE_FIELDS), max_fields=20)
    except Exception as exc:
        raise BodyError(invalid({"body": [f"Malformed multipart body: {exc}"]})) from None
    fields: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    repeated: set[str] = set()
    for name, value in form.multi_items():
        if name in fields or name in files:
            repeated.add(name)
        if isinstance(value, str):
            fields[name] = value
        else:
            files[name] = await value.read()
    if repeated:
        raise BodyError(invalid({name[:80]: [f"{name[:80]} was given more than once"] for name in sorted(repeated)}))
    if "parameters" in fields:
        try:
            text = fields["parameters"]
            fields["parameters"] = json.loads(text, parse_constant=_no_constants) if text.strip() else None
        except (ValueError, RecursionError) as exc:
            raise BodyError(invalid({"parameters": [f"parameters must be a JSON object: {exc}"]})) from None
    return fields, files


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def invalid(details: dict[str, list[str]]) -> JSONResponse:
    return error(400, "Invalid input", details=details)


# -- routes --------------------------------------------------------------------------------------
def build_router(client_factory: Any = get_client) -> APIRouter:
    router = APIRouter()

    def client() -> JobClient:
        result: JobClient = client_factory()
        return result

    @router.post(
        "/api/v1/tasks/submit/",
        status_code=202,
        response_model=SubmitResponse,
        responses={
            400: {"model": ErrorResponse, "description": "Invalid input; details name each field"},
            413: {"model": ErrorResponse},
            415: {"model": ErrorResponse},
            429: {"model": ErrorResponse, "description": "Over ATELIER_RATE_LIMIT; see the Retry-After header"},
            503: ERRORS[503],
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": SubmitRequest.model_json_schema()},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["task_type"],
                            "properties": {
                                "task_type": {"type": "string"},
                                "prompt": {"type": "string"},
                                "parameters": {"type": "string", "description": "A JSON object"},
                                **{name: {"type": "string", "format": "binary"} for name in IMAGE_FIELDS},
                            },
                        }
                    },
                },
            }
        },
        tags=["tasks"],
    )
    async def submit_task(request: Request) -> Any:
        """Submit a job. JSON with base64 images, or multipart with image files."""
        try:  # before reading the body: a client over its limit costs one Redis call
            client().admit(request.headers, request.client.host if request.client else None)
        except RateLimited as exc:
            return error(
                429,
                "Too many requests",
                message=str(exc),
                retry_after=exc.retry_after,
                headers={"Retry-After": str(exc.retry_after)},
            )
        try:
            fields, files = await parse_submission(request)
        except BodyError as exc:
            return exc.response
        try:
            # Validation decodes some images: off the event loop, so other requests are not held up.
            status = await run_in_threadpool(client().submit, fields, files)
        except InvalidSubmission as exc:
            return invalid(exc.details)
        return JSONResponse(
            {"task_id": status.task_id, "status": status.status, "message": status.message}, status_code=202
        )

    @router.get(
        "/api/v1/tasks/{task_id}/status/",
        response_model=StatusResponse,
        response_model_exclude_none=True,
        responses={**ERRORS, 400: {"model": ErrorResponse, "description": "wait is not a number from 0 to 30"}},
        tags=["tasks"],
    )
    async def task_status(
        request: Request,
        task_id: str,
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
            return request.app.state.stopping() or await request.is_disconnected()

        try:
            jobs = client()
            status = await (jobs.watch(task_id, seconds, gone) if seconds else run_in_threadpool(jobs.status, task_id))
        except JobNotFound:
            return not_found(task_id)
        # A response, not a dict: the model above documents it, without re-validating every poll.
        return JSONResponse(status.as_dict())

    @router.get(
        "/api/v1/tasks/{task_id}/result/",
        response_model=ResultResponse,
        response_model_exclude_none=True,
        responses={
            **ERRORS,
            200: {"content": {"image/png": {}}, "description": "JSON, or the PNG itself with ?format=png"},
            409: {"model": ErrorResponse, "description": "Not finished, failed or cancelled"},
        },
        tags=["tasks"],
    )
    def task_result(task_id: str, format: str = "json") -> Any:
        """The finished image: JSON with base64 PNG, or the PNG bytes with ``?format=png``."""
        if format not in ("json", "png"):
            return invalid({"format": [f"format must be json or png, got {format!r}"]})
        try:
            status, result, png = client().result(task_id)
        except JobNotFound:
            return not_found(task_id)
        except JobConflict as exc:
            return error(
                409, str(exc), task_id=exc.status.task_id, status=exc.status.status, message=exc.status.message
            )
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
        "/api/v1/tasks/{task_id}/cancel/",
        response_model=CancelResponse,
        responses={**ERRORS, 409: {"model": ErrorResponse, "description": "Already finished; result kept"}},
        tags=["tasks"],
    )
    def cancel_task(task_id: str) -> Any:
        """Cancel a queued job, or stop a running one at its next step."""
        try:
            status = client().cancel(task_id)
        except JobNotFound:
            return not_found(task_id)
        except JobConflict as exc:
            return error(409, "Task already finished", task_id=exc.status.task_id, status=exc.status.status)
        return {"task_id": status.task_id, "status": status.status, "message": "Task cancelled"}

    @router.get("/api/v1/styles/", response_model=list[StylePresetInfo], tags=["styles"])
    def list_styles() -> Any:
        """The style presets for ``style_transfer``'s ``parameters.style``."""
        return [
            {
                "name": preset.name,
                "title": preset.title,
                "engine": preset.engine,
                "thumbnail_url": f"/api/v1/styles/{preset.name}/thumbnail",
            }
            for preset in STYLE_PRESETS.values()
        ]

    @router.get(
        "/api/v1/styles/{name}/thumbnail",
        response_class=FileResponse,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorResponse}},
        tags=["styles"],
    )
    def style_thumbnail(name: str) -> Any:
        """A small preview of the preset applied to a sample photo."""
        if name not in STYLE_PRESETS:
            return error(
                404, "Style not found", message=f"Unknown style {name!r}; available: {', '.join(STYLE_PRESETS)}"
            )
        return FileResponse(ASSETS / "styles" / f"{name}.jpg", media_type="image/jpeg")

    @router.get("/healthz", response_model=HealthResponse, responses={503: ERRORS[503]}, tags=["health"])
    def healthz() -> Any:
        """Redis reachability and the live workers consuming each queue."""
        try:
            return client().health()
        except redis.exceptions.RedisError as exc:
            response = unavailable(None, exc)
            return JSONResponse(
                {"status": "unavailable", "redis": {"reachable": False}, **json.loads(response.body)},
                status_code=503,
            )

    # The same routes without (or, for /healthz, with) the trailing slash, for hand-typed URLs.
    for route in list(router.routes):
        if isinstance(route, APIRoute):
            alias = route.path[:-1] if route.path.endswith("/") else route.path + "/"
            router.add_api_route(alias, route.endpoint, methods=list(route.methods), include_in_schema=False)

    # Last: what no route above takes gets an answer in the API's own shape, not the page's 404.
    def unrouted(request: Request) -> JSONResponse:
        path = request.url.path
        routes = [r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is not unrouted]
        allowed = sorted({method for r in routes if r.path_regex.match(path) for method in r.methods})
        if allowed:
            message = f"{request.method} is not allowed on {path}; use {' or '.join(allowed)}"
            return error(405, "Method not allowed", headers={"Allow": ", ".join(allowed)}, message=message)
        task = re.fullmatch(r"/api/v1/tasks/(.+?)/(status|result|cancel)/?", path)
        if task:
            return not_found(task.group(1))
        return error(404, "Not found", message=f"No endpoint {path}; the API is described at /docs")

    router.add_api_route("/api/{rest:path}", unrouted, methods=list(METHODS), include_in_schema=False)
    for path in ("/healthz", "/healthz/"):
        router.add_api_route(path, healthz, methods=["HEAD"], include_in_schema=False)  # uptime probes
        router.add_api_route(
            path, unrouted, methods=[m for m in METHODS if m not in ("GET", "HEAD")], include_in_schema=False
        )

    return router


def unavailable(request: Request | None, exc: Exception) -> JSONResponse:
    return error(
        503,
        "Service unavailable",
        message=f"Redis is unreachable ({get_settings().broker_url.split('@')[-1]}): {exc}",
    )


def create_api(client_factory: Any = get_client, settings: Settings | None = None) -> FastAPI:
    """The FastAPI app with the REST routes; app.py mounts the Gradio page on it.

    With ATELIER_AUTH or ATELIER_API_TOKENS set, every route but /healthz needs credentials,
    the mounted page and Gradio API included.
    """
    settings = settings or get_settings()
    app = FastAPIOffline(  # Swagger UI and ReDoc served from the package: /docs works offline
        title="Atelier",
        summary="AI image studio: generation, face swap, background and object removal, style transfer",
        version="0.1.0",
    )
    app.include_router(build_router(client_factory))
    app.state.stopping = lambda: False  # app.run_web points it at uvicorn's exit flag: long polls end at once
    if settings.credentials or settings.tokens:
        app.add_middleware(RequireAuth, credentials=settings.credentials, tokens=settings.tokens)
    for exc_type in (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        OperationalError,
        ServiceUnavailable,
    ):
        app.add_exception_handler(exc_type, unavailable)
    return app
