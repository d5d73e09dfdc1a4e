"""What every submit route shares: ``Idempotency-Key`` (a retry answers the first submit again) and
``Prefer: wait=N`` (answer with the final status when the work ends within N seconds)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from access import checked_user
from api.errors import BodyError, error, invalid
from api.schemas import UNAVAILABLE, ErrorResponse
from jobs import JobClient, requester
from jobs.idempotency import IdempotencyConflict, fingerprint, valid_key
from jobs.limits import RateWindow
from jobs.owners import Caller
from jobs.status import JobStatus

PREFER_WAIT_MAX = 60
PREFER_WAIT = re.compile(r"(?:^|[\s,;])wait\s*=\s*\"?(\d{1,6})\"?", re.IGNORECASE)
Submit = Callable[[], dict[str, Any]]
# Documented on every submit route (OpenAPI header parameters).
SUBMIT_HEADERS: list[dict[str, Any]] = [
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        "description": "1-255 printable characters. A retry with the same key and body within ATELIER_RESULT_TTL "
        "answers the first submit again (200, Idempotent-Replayed: true) and enqueues nothing; the same key "
        "with another body is a 422.",
    },
    {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "example": "wait=30"},
        "description": "wait=N (N ≤ 60): answer 200 with the final status if the work ends within N seconds "
        "(Preference-Applied: wait=N), else the usual 202.",
    },
]


def idempotency_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key``, or None; a 400 for one that is not 1-255 printable characters."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not valid_key(key):
        raise BodyError(invalid({"Idempotency-Key": ["Idempotency-Key must be 1-255 printable ASCII characters"]}))
    return key


def prefer_wait(request: Request) -> int | None:
    """Seconds from ``Prefer: wait=N`` (at most 60), or None when the client asked for no wait."""
    match = PREFER_WAIT.search(request.headers.get("prefer", ""))
    return min(int(match.group(1)), PREFER_WAIT_MAX) if match else None


def caller_of(request: Request, jobs: JobClient) -> str:
    peer = request.client.host if request.client else None
    return requester(checked_user(request.scope), request.headers, peer, jobs.settings)


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, self.status_code, headers=self.headers)


async def submit_once(request: Request, jobs: JobClient, content: tuple[Any, Any], submit: Submit) -> Answer:
    """Run ``submit`` (which enqueues and returns the 202 body) once per ``Idempotency-Key``: a retry
    with the same key and content gets the first answer again (200, ``Idempotent-Replayed: true``),
    the same key with other content a 422. Without a key, ``submit`` simply runs."""
    key = idempotency_key(request)
    if key is None:
        return Answer(202, await run_in_threadpool(submit))
    caller = caller_of(request, jobs)
    digest = fingerprint(request.url.path.rstrip("/"), *content)
    keys = jobs.idempotency
    try:
        replay = await run_in_threadpool(keys.begin, caller, key, digest)
    except IdempotencyConflict as exc:
        raise BodyError(error(exc.status_code, "Idempotency-Key reused", message=str(exc))) from None
    if replay is not None:
        return Answer(200, replay.body, {"Idempotent-Replayed": "true"})
    try:
        body = await run_in_threadpool(submit)
    except BaseException:
        await run_in_threadpool(keys.abandon, caller, key)
        raise
    await run_in_threadpool(keys.finish, caller, key, digest, 202, body)
    return Answer(202, body)


async def waited(
    request: Request, answer: Answer, ended: Callable[[float], Awaitable[dict[str, Any] | None]]
) -> JSONResponse:
    """The answer; with ``Prefer: wait=N``, a new submit's work awaited first: ``ended(seconds)`` gives
    its final status (answered 200) or None (the 202 as it was)."""
    seconds = prefer_wait(request)
    if seconds is None or answer.status_code != 202:
        return answer.response()
    final = await ended(float(seconds))
    if final is None:
        return answer.response()
    return JSONResponse(final, 200, headers={"Preference-Applied": f"wait={seconds}"})


def note_rate_window(request: Request, window: RateWindow | None) -> None:
    """Have the answer (whatever it is) carry the client's ``RateLimit-*`` headers (``api.RateLimitHeaders``)."""
    if window is not None:
        request.state.rate_limit_headers = window.headers()


async def job_end(
    request: Request, jobs: JobClient, submitted: JobStatus, seconds: float, caller: Caller | None = None
) -> dict[str, Any] | None:
    """The final status of the job (or chain) just submitted if it ends within ``seconds``, else None."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def gone() -> bool:
        return bool(request.app.state.stopping()) or await request.is_disconnected()

    if submitted.step is None:  # a single job: woken by its own messages, without reading its status
        status = await jobs.ended(submitted, seconds, gone)
        return status.as_dict() if status.finished else None
    while (remaining := deadline - loop.time()) > 0:
        status = await jobs.watch(submitted.task_id, remaining, gone, caller)
        if status.finished:
            return status.as_dict()
        if await gone():
            return None
    return None


async def batch_end(
    request: Request, jobs: JobClient, batch_id: str, seconds: float, caller: Caller | None = None
) -> dict[str, Any] | None:
    """The batch's final status if every item ends within ``seconds``, else None."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline and not await request.is_disconnected():
        status = await run_in_threadpool(jobs.batch_status, batch_id, caller)
        if status.finished:
            return status.model_dump(mode="json")
        await asyncio.sleep(0.25)
    return None


def submit_docs(final: Any, bad_input: str, json_schema: dict[str, Any], form: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI answers and request body every submit route shares (``final``: the 200's model)."""
    return {
        "responses": {
            200: {
                "model": final,
                "description": "With Prefer: wait=N, the final status if the work ended within N s; with an "
                "Idempotency-Key used before, the first answer again (header Idempotent-Replayed: true)",
            },
            400: {"model": ErrorResponse, "description": bad_input},
            409: {"model": ErrorResponse, "description": "A submit with this Idempotency-Key is still in progress"},
            422: {"model": ErrorResponse, "description": "This Idempotency-Key was used with another body"},
            413: {"model": ErrorResponse},
            415: {"model": ErrorResponse},
            429: {"model": ErrorResponse, "description": "Over ATELIER_RATE_LIMIT; see the Retry-After header"},
            **UNAVAILABLE,
        },
        "openapi_extra": {
            "parameters": SUBMIT_HEADERS,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": json_schema}, "multipart/form-data": {"schema": form}},
            },
        },
    }
