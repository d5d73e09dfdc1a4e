"""Chains through the Gradio API: gradio_client passes follow-up steps as ``then`` (JSON text)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.helpers import EXAMPLES
from tests.support.stack import wait_until


@pytest.fixture(scope="module")
def client(live_server: str) -> Iterator[Any]:
    from gradio_client import Client

    yield Client(live_server, verbose=False)


def style_inputs() -> list[Any]:
    from gradio_client import handle_file

    return [handle_file(str(EXAMPLES / "coffee.jpg")), "starry-night", None, 0.8, "fast", False]


def test_a_chain_through_submit_style_transfer(client: Any, live_server: str) -> None:
    then = json.dumps([{"task_type": "style_transfer", "parameters": {"style": "mosaic"}}])
    task_id = client.predict(*style_inputs(), then, api_name="/submit_style_transfer")

    def finished() -> dict[str, Any] | None:
        status: dict[str, Any] = client.predict(task_id, api_name="/task_status")
        return status if status["status"] in ("SUCCESS", "FAILURE", "REVOKED") else None

    final = wait_until(finished, 120, interval=0.1, what="the chain")
    assert final["status"] == "SUCCESS", final
    assert [step["task_type"] for step in final["steps"]] == ["style_transfer", "style_transfer"]
    assert Image.open(client.predict(task_id, api_name="/task_result")).size == (600, 400)
    rest = httpx.get(f"{live_server}/api/v1/tasks/{task_id}/status/").json()
    assert rest["steps"] == final["steps"]


def test_the_streaming_endpoint_shows_the_chains_steps(client: Any) -> None:
    then = json.dumps([{"task_type": "style_transfer", "parameters": {"style": "mosaic"}}])
    job = client.submit(*style_inputs(), then, api_name="/style_transfer")
    wait_until(job.done, 120, interval=0.05, what="the chain")
    outputs = job.outputs()
    assert outputs[-1][2] == "Done"
    assert any(out[2].startswith("Step ") and " of 2 · " in out[2] for out in outputs), outputs


def test_a_bad_step_is_refused_with_its_field_named(client: Any) -> None:
    from gradio_client.exceptions import AppError

    then = json.dumps([{"task_type": "background_removal", "parameters": {"model": "no-such-model"}}])
    with pytest.raises(AppError, match=r"then\[0\]\.parameters\.model"):
        client.predict(*style_inputs(), then, api_name="/submit_style_transfer")
    with pytest.raises(AppError, match="then: then must be a JSON list of steps"):
        client.predict(*style_inputs(), "not json", api_name="/submit_style_transfer")
