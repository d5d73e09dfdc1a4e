"""The REST API (``/api/v1``) and ``/healthz``, on the same FastAPI app that serves the page.

Routes live in ``api/routes/`` by resource; they get the job client and settings through
``api.deps``; domain errors become answers in ``api.errors``; ``api.fallback`` answers, last, what
no route takes.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from access import RateLimitHeaders, RequireAuth
from api.errors import add_handlers
from api.fallback import fallback_router
from api.routes import batches, catalogue, health, models, png_info, tasks
from jobs import JobClient, get_client
from settings import Settings, get_settings


def create_api(job_client: Callable[[], JobClient] = get_client, settings: Settings | None = None) -> FastAPI:
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
    app.state.job_client = job_client
    app.state.settings = settings
    app.state.stopping = lambda: False  # app.run_web points it at uvicorn's exit flag: long polls end at once
    routers = [resource.router for resource in (tasks, batches, png_info, catalogue, models, health)]
    for router in [*routers, fallback_router(routers)]:  # the fallbacks last: they answer what no route takes
        app.include_router(router)
    add_handlers(app)
    app.add_middleware(RateLimitHeaders)
    if settings.credentials or settings.tokens:
        app.add_middleware(RequireAuth, credentials=settings.credentials, tokens=settings.tokens)
    return app


__all__ = ["create_api"]
