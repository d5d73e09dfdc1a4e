"""What routes get injected: the job client and the settings of the app they serve.

``create_api`` stores both on ``app.state``; a test overrides one dependency
(``app.dependency_overrides[job_client] = ...``) instead of patching a global.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from jobs import JobClient
from settings import Settings


def job_client(request: Request) -> JobClient:
    client: JobClient = request.app.state.job_client()
    return client


def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


Jobs = Annotated[JobClient, Depends(job_client)]
AppSettings = Annotated[Settings, Depends(app_settings)]
