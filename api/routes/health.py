"""``/healthz``: Redis reachability and the live workers of each queue, for probes and people."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import Jobs
from api.errors import unavailable_message
from api.schemas import UNAVAILABLE, HealthResponse
from jobs import ServiceUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse, responses=UNAVAILABLE)
def healthz(request: Request, jobs: Jobs) -> Any:
    """Redis reachability and the live workers consuming each queue."""
    try:
        return jobs.health()
    except ServiceUnavailable as exc:
        body = {"error": "Service unavailable", "message": unavailable_message(request, exc)}
        return JSONResponse({"status": "unavailable", "redis": {"reachable": False}, **body}, status_code=503)
