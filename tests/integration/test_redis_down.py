"""With Redis unreachable, every route answers 503 with a clear message, fast, and nothing hangs."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from fastapi.testclient import TestClient

from app import free_port
from jobs import JobClient
from settings import Settings
from tests.support.stack import RedisServer


def test_unreachable_redis_is_a_fast_503() -> None:
    from api import create_api

    client = JobClient(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))  # nothing listens there
    with TestClient(create_api(lambda: client)) as http:
        requests = [
            ("post", "/api/v1/tasks/submit/", {"json": {"task_type": "image_generation", "prompt": "a boat"}}),
            ("get", "/api/v1/tasks/00000000-0000-4000-8000-000000000000/status/", {}),
            ("get", "/api/v1/tasks/00000000-0000-4000-8000-000000000000/status/?wait=20", {}),
            ("post", "/api/v1/tasks/00000000-0000-4000-8000-000000000000/cancel/", {}),
            ("get", "/healthz", {}),
        ]
        for method, path, kwargs in requests:
            started = time.monotonic()
            response = http.request(method, path, **kwargs)
            assert time.monotonic() - started < 2.5, path  # a fast answer, not a hang (sockets time out at 1 s)
            assert response.status_code == 503, (path, response.text)
            assert "Redis is unreachable" in response.json()["message"]
        assert http.get("/healthz").json()["redis"] == {"reachable": False}
        # Validation needs no Redis: bad input is still a 400, not a 503.
        assert http.post("/api/v1/tasks/submit/", json={"task_type": "nope"}).status_code == 400


def test_a_stalled_redis_is_a_503_and_recovers_by_itself(tmp_path: Path) -> None:
    from api import create_api

    server = RedisServer(tmp_path)
    client = JobClient(Settings(redis_url=server.url))
    try:
        with TestClient(create_api(lambda: client)) as http:
            assert http.get("/healthz").status_code == 200
            server.process.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                response = http.get("/healthz")
                assert time.monotonic() - started < 3  # the socket timeout is 1 s; not the 20 s wait
                assert response.status_code == 503
                started = time.monotonic()  # a long poll does not wait out its 20 s on a stalled Redis
                response = http.get("/api/v1/tasks/00000000-0000-4000-8000-000000000000/status/?wait=20")
                assert time.monotonic() - started < 3  # as fast as any other route
                assert response.status_code == 503, response.text
            finally:
                server.process.send_signal(signal.SIGCONT)
            assert http.get("/healthz").status_code == 200
            for query in ("", "?wait=1"):  # the waiting requests' connections recover too
                status = http.get(f"/api/v1/tasks/00000000-0000-4000-8000-000000000000/status/{query}")
                assert status.status_code == 404, status.text
    finally:
        server.stop()
