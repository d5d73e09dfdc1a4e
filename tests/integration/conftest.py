"""Integration fixtures: the REST app in-process, against a real Redis and real worker processes."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jobs import FINISHED, JobState
from tests.support.operations import register
from tests.support.stack import Worker, wait_until, waiting_messages

register()  # the web side must know test_steps too, to validate its submissions


class Api:
    """A thin REST client with the polling helpers the tests share."""

    def __init__(self, client: TestClient) -> None:
        self.http = client

    def submit(self, body: dict[str, Any]) -> str:
        response = self.http.post("/api/v1/tasks/submit/", json=body)
        assert response.status_code == 202, response.text
        task_id: str = response.json()["task_id"]
        return task_id

    def status(self, task_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/tasks/{task_id}/status/")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def wait(self, task_id: str, states: Collection[str] = FINISHED, timeout: float = 30) -> dict[str, Any]:
        seen: list[dict[str, Any]] = []

        def reached() -> dict[str, Any] | None:
            status = self.status(task_id)
            seen.append(status)
            return status if status["status"] in states else None

        try:
            result: dict[str, Any] = wait_until(reached, timeout, interval=0.02, what=f"{task_id} to reach {states}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last status {seen[-1] if seen else None}") from None
        return result

    def trace(self, task_id: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Every distinct status seen while polling until the job finishes."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(task_id)
            if not seen or status != seen[-1]:
                seen.append(status)
            if status["status"] in FINISHED:
                return seen
            time.sleep(0.01)
        raise AssertionError(f"{task_id} did not finish; seen {seen}")

    def cancel(self, task_id: str) -> Any:
        return self.http.post(f"/api/v1/tasks/{task_id}/cancel/")


@pytest.fixture(scope="session")
def api(workers: dict[str, Worker]) -> Iterator[Api]:
    from api import create_api

    with TestClient(create_api()) as client:
        yield Api(client)


@pytest.fixture
def busy_cpu(api: Api, photo: Any, redis_client: Any) -> Iterator[str]:
    """Keep the only cpu worker busy with a long job (2 minutes: always cancelled, never waited out)."""
    from tests.conftest import b64

    task_id = api.submit(
        {"task_type": "test_steps", "image": b64(photo.resize((8, 8))), "parameters": {"steps": 2400, "delay": 0.05}}
    )
    api.wait(task_id, (JobState.PROCESSING,))
    yield task_id
    if api.status(task_id)["status"] not in FINISHED:  # a test may have cancelled it already
        api.cancel(task_id)
    api.wait(task_id, (JobState.REVOKED,), timeout=60)
    # The broker list, not /healthz: cancelled messages stay there until the worker pops and skips them.
    wait_until(lambda: waiting_messages(redis_client, "cpu") == 0, 20, what="cpu queue drained")
