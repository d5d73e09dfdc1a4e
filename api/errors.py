"""Error answers in the API's one shape, and the handlers that turn domain errors into them."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from jobs import AlreadyFinished, BatchNotFound, JobConflict, JobNotFound, RateLimited, ServiceUnavailable
from jobs.errors import UNREACHABLE
from jobs.owners import TooManyActive
from pipelines.validation import InvalidSubmission


def error(status_code: int, error: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"error": error, **{key: value for key, value in extra.items() if value is not None}}
    return JSONResponse(body, status_code=status_code, headers=headers)


def invalid(details: dict[str, list[str]]) -> JSONResponse:
    return error(400, "Invalid input", details=details)


def not_found(task_id: str) -> JSONResponse:
    shown = task_id if len(task_id) <= 80 else task_id[:80] + "…"
    return error(404, "Task not found", task_id=shown, message="Unknown or expired task id")


def unavailable_message(request: Request, exc: Exception) -> str:
    url: str = request.app.state.settings.broker_url
    return f"Redis is unreachable ({url.split('@')[-1]}): {exc}"


class BodyError(Exception):
    """A request body refused before it reached the job client; ``response`` says why."""

    def __init__(self, response: JSONResponse) -> None:
        self.response = response


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return not_found(str(request.path_params.get("task_id", exc)))


def batch_not_found(batch_id: str) -> JSONResponse:
    shown = batch_id if len(batch_id) <= 80 else batch_id[:80] + "…"
    return error(404, "Batch not found", batch_id=shown, message="Unknown or expired batch id")


async def _batch_not_found(request: Request, exc: Exception) -> JSONResponse:
    return batch_not_found(str(request.path_params.get("batch_id", exc)))


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, JobConflict)
    status = exc.status
    message = None if isinstance(exc, AlreadyFinished) else status.message  # a cancel's 409 keeps to the contract
    return error(409, str(exc), task_id=status.task_id, status=status.status, message=message)


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidSubmission)
    return invalid(exc.details)


async def _rate_limited(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RateLimited)
    retry = str(exc.retry_after)
    return error(
        429, "Too many requests", message=str(exc), retry_after=exc.retry_after, headers={"Retry-After": retry}
    )


async def _too_many_active(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TooManyActive)
    return error(429, "Too many active jobs", message=str(exc), retry_after=exc.retry_after,
                 headers={"Retry-After": str(exc.retry_after)})  # fmt: skip


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    return error(503, "Service unavailable", message=unavailable_message(request, exc))


async def _body(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BodyError)
    return exc.response


def add_handlers(app: FastAPI) -> None:
    """Domain errors become HTTP answers here, once, instead of in every route."""
    app.add_exception_handler(JobNotFound, _not_found)
    app.add_exception_handler(BatchNotFound, _batch_not_found)
    app.add_exception_handler(JobConflict, _conflict)
    app.add_exception_handler(InvalidSubmission, _invalid)
    app.add_exception_handler(RateLimited, _rate_limited)
    app.add_exception_handler(TooManyActive, _too_many_active)
    app.add_exception_handler(BodyError, _body)
    for exc_type in (ServiceUnavailable, *UNREACHABLE):  # the raw ones too: nothing reaches a user as a 500
        app.add_exception_handler(exc_type, _unavailable)
