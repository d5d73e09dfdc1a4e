"""What routes get injected: the job client and the settings of the app they serve.

``create_api`` stores both on ``app.state``; a test overrides one dependency
(``app.dependency_overrides[job_client] = ...``) instead of patching a global.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from access import checked_user
from jobs import JobClient
from jobs.owners import Caller
from settings import Settings


# Coroutines, though nothing here awaits: FastAPI runs a plain function dependency in its thread pool,
# and a hop to a thread and back costs each request more than these few lines do.
async def job_client(request: Request) -> JobClient:
    client: JobClient = request.app.state.job_client()
    return client


async def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def request_caller(request: Request) -> Caller:
    """Who sent the request: their jobs are theirs alone when access control is on."""
    client: JobClient = request.app.state.job_client()
    peer = request.client.host if request.client else None
    return client.caller(checked_user(request.scope), request.headers, peer)


Jobs = Annotated[JobClient, Depends(job_client)]
CallerOf = Annotated[Caller, Depends(request_caller)]
AppSettings = Annotated[Settings, Depends(app_settings)]
