"""What no route takes: trailing-slash aliases, 405s with ``Allow``, and the API's own 404.

``fallback_router`` is built once, from every resource router, and ``create_api`` includes it
last: each route gets its alias and its 405, and the catch-all can swallow none of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from api.errors import batch_not_found, error, not_found

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
TASK_PATH = re.compile(r"/api/v1/tasks/(.+?)/(status|result|cancel)/?")
BATCH_PATH = re.compile(r"/api/v1/batches/(.+?)(/(result|cancel))?/?")


def fallback_router(routers: Sequence[APIRouter]) -> APIRouter:
    """The aliases, 405s and 404s for the routes of ``routers``; to be included after them."""
    app = APIRouter()
    routes = [route for router in routers for route in router.routes if isinstance(route, APIRoute)]
    # The same routes without (or, for /healthz, with) the trailing slash, for hand-typed URLs.
    for route in routes:
        alias = route.path[:-1] if route.path.endswith("/") else route.path + "/"
        app.add_api_route(alias, route.endpoint, methods=list(route.methods or ()), include_in_schema=False)
    routed = routes + [route for route in app.routes if isinstance(route, APIRoute)]

    def unrouted(request: Request) -> JSONResponse:
        path = request.url.path
        allowed = sorted({method for route in routed if route.path_regex.match(path) for method in route.methods or ()})
        if allowed:
            message = f"{request.method} is not allowed on {path}; use {' or '.join(allowed)}"
            return error(405, "Method not allowed", headers={"Allow": ", ".join(allowed)}, message=message)
        task = TASK_PATH.fullmatch(path)
        if task:
            return not_found(task.group(1))
        batch = BATCH_PATH.fullmatch(path)
        if batch:
            return batch_not_found(batch.group(1))
        return error(404, "Not found", message=f"No endpoint {path}; the API is described at /docs")

    app.add_api_route("/api/{rest:path}", unrouted, methods=list(METHODS), include_in_schema=False)
    health = next(route for route in routed if route.path == "/healthz")
    for path in ("/healthz", "/healthz/"):
        app.add_api_route(path, health.endpoint, methods=["HEAD"], include_in_schema=False)  # uptime probes
        others = [method for method in METHODS if method not in ("GET", "HEAD")]
        app.add_api_route(path, unrouted, methods=others, include_in_schema=False)
    routed.extend(route for route in app.routes if isinstance(route, APIRoute) and route.endpoint is health.endpoint)
    return app
