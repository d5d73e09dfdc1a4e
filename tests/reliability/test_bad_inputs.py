"""Bad input, through REST and the Gradio API alike: a clear 4xx naming the field, nothing stored
or enqueued, and the service healthy after."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import b64
from tests.integration.conftest import Api
from tests.integration.test_jobs import SMALL, steps_job
from tests.pipelines.test_validation import BAD_INPUTS
from tests.support.stack import job_ids, settle, waiting_messages

OTHER_HTTP_CASES = [
    # (case, raw body, content type, expected status, field in details or None)
    ("malformed JSON", b'{"task_type": ', "application/json", 400, "body"),
    ("JSON array", b"[1, 2]", "application/json", 400, "body"),
    ("JSON null", b"null", "application/json", 400, "body"),
    ("empty body", b"", "application/json", 400, "body"),
    ("non-UTF-8 bytes", b'{"task_type": "image_generation", "prompt": "\xff\xfe"}', "application/json", 400, "body"),
    ("NaN parameter", b'{"task_type": "image_generation", "prompt": "x", "parameters": {"steps": NaN}}',
     "application/json", 400, "body"),
    ("wrong content type", b"task_type=image_generation", "text/plain", 415, None),
    ("no content type", b"{}", "", 415, None),
    ("multipart parameters not JSON", None, "multipart", 400, "parameters"),
]  # fmt: skip


@pytest.fixture
def untouched(api: Api, redis_client: Any) -> Iterator[None]:
    """Nothing stored, nothing enqueued, and /healthz fine afterwards."""

    def snapshot() -> tuple[set[bytes], int]:
        return job_ids(redis_client), waiting_messages(redis_client)

    settle(redis_client)
    before = snapshot()
    yield
    assert snapshot() == before
    assert api.http.get("/healthz").json()["status"] == "ok"


@pytest.mark.parametrize(("case", "fields", "field", "words"), BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_rest_bad_fields(api: Api, untouched: None, case: str, fields: dict, field: str, words: str) -> None:
    response = api.http.post("/api/v1/tasks/submit/", json=fields)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "Invalid input"
    assert any(words in message for message in body["details"][field]), body


@pytest.mark.parametrize(
    ("case", "raw", "content_type", "status", "field"), OTHER_HTTP_CASES, ids=[c[0] for c in OTHER_HTTP_CASES]
)
def test_rest_bad_bodies(
    api: Api, untouched: None, case: str, raw: bytes | None, content_type: str, status: int, field: str | None
) -> None:
    if content_type == "multipart":
        response = api.http.post("/api/v1/tasks/submit/", data={"task_type": "style_transfer", "parameters": "{oops"},
                                 files={"image": ("a.png", b"x", "image/png")})  # fmt: skip
    else:
        response = api.http.post("/api/v1/tasks/submit/", content=raw, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    if field:
        assert field in response.json()["details"]


def test_upload_over_the_limit_is_413(api: Api, untouched: None, monkeypatch: Any) -> None:
    from api.deps import app_settings
    from settings import get_settings

    small = get_settings().model_copy(update={"max_upload_mb": 0.05})
    monkeypatch.setitem(api.http.app.dependency_overrides, app_settings, lambda: small)
    big = {"task_type": "background_removal", "image": "A" * 100_000}
    response = api.http.post("/api/v1/tasks/submit/", json=big)
    assert response.status_code == 413 and "limit" in response.json()["message"]


@pytest.mark.parametrize("task_id", ["00000000-0000-4000-8000-000000000000", "nope", "1;DROP", "%2e%2e", "x" * 1000])
def test_unknown_and_malformed_ids_are_404(api: Api, task_id: str) -> None:
    for method, path in (("get", "status"), ("get", "result"), ("post", "cancel")):
        response = api.http.request(method, f"/api/v1/tasks/{task_id}/{path}/")
        assert response.status_code == 404 and response.json()["error"] == "Task not found"
        assert len(response.content) < 1000


def test_html_and_control_characters_in_a_prompt_stay_plain_text(api: Api, redis_client: Any) -> None:
    prompt = '<script>alert("x")</script>\x07\ttab <b>bold</b> ☕'
    task_id = api.submit({"task_type": "image_generation", "prompt": prompt})
    assert json.loads(redis_client.hget(f"atelier:job:{task_id}", "prompt")) == prompt  # stored exactly
    api.wait(task_id)


def test_cancel_of_a_finished_job_is_409_and_keeps_the_result(api: Api) -> None:
    task_id = api.submit(steps_job(steps=1, delay=0))
    api.wait(task_id)
    assert api.cancel(task_id).status_code == 409
    assert api.http.get(f"/api/v1/tasks/{task_id}/result/").status_code == 200


GRADIO_CASES = [
    ("/image_generation", ["", "", 512, 512, 4, 0, -1, 1], "Prompt is required"),
    ("/submit_image_generation", ["x" * 5001, "", 512, 512, 4, 0, -1, 1], "at most 5000"),
    ("/submit_image_generation", ["a fox", "", 500, 512, 4, 0, -1, 1], "multiple of 8"),
    # Sliders and number fields leave their values to the same validation as REST: not rounded, and
    # the error names the field by the tab's label (REST names the same fact `parameters.steps`).
    (
        "/submit_image_generation",
        ["a fox", "", 512, 512, 0, 0, -1, 1],
        r"Steps: .*greater than or equal to 1",
    ),
    ("/submit_image_generation", ["a fox", "", 512, 512, 2.7, 0, -1, 1], r"Steps: .*valid integer"),
    ("/submit_image_generation", ["a fox", "", 512.5, 512, 4, 0, -1, 1], r"Width: .*valid integer"),
    ("/submit_image_generation", ["a fox", "", 512, 512, 4, 0, -5, 1], r"Seed: .*greater than or equal to 0"),
    ("/submit_object_removal", ["editor", "photo", "telea", 1000], r"Grow the mask: .*less than or equal to 64"),
    ("/submit_object_removal", ["editor", "photo", "telea", 2.5], r"Grow the mask: .*valid integer"),
    ("/submit_style_transfer", ["photo", "mosaic", None, 5, "fast", False], r"Strength: .*less than or equal to 1"),
    ("/submit_face_swap", ["photo", "photo", -2], r"Face to replace: .*greater than or equal to 0"),
    (
        "/submit_style_transfer",
        ["photo", "van-gogh", None, 1.0, "fast", False],
        "Unknown style 'van-gogh'; available: mosaic",
    ),
    ("/submit_style_transfer", ["photo", "", None, 1.0, "fast", False], "a style preset .* or a style image"),
    (
        "/submit_background_removal",
        ["photo", "u3net", False, "", False, False],
        "Unknown model 'u3net'; available: u2net",
    ),
    ("/submit_background_removal", ["photo", "u2net", False, "#zzzzzz", False, False], "bgcolor"),
    ("/submit_face_swap", ["photo", None, -1], "Target photo is required"),
    ("/task_status", ["not-an-id"], "Task not found"),
]


@pytest.mark.parametrize(("endpoint", "args", "words"), GRADIO_CASES, ids=[f"{c[0]}:{c[2]}" for c in GRADIO_CASES])
def test_gradio_api_bad_inputs(live_server: str, untouched: None, endpoint: str, args: list[Any], words: str) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from tests.e2e.helpers import EXAMPLES

    photo = handle_file(str(EXAMPLES / "coffee.jpg"))
    editor = {"background": photo, "layers": [], "composite": None}
    args = [{"photo": photo, "editor": editor}.get(arg, arg) if isinstance(arg, str) else arg for arg in args]
    with pytest.raises(AppError, match=words):
        Client(live_server, verbose=False).predict(*args, api_name=endpoint)


def test_the_service_is_healthy_after_all_that(api: Api) -> None:
    body = {
        "task_type": "object_removal",
        "image": b64(SMALL),
        "mask": b64(SMALL.convert("L").point(lambda v: 255 if v > 100 else 0)),
    }
    assert api.http.get("/healthz").json()["status"] == "ok"
    assert api.wait(api.submit(steps_job(steps=1, delay=0)))["status"] == "SUCCESS"
    assert api.http.post("/api/v1/tasks/submit/", json=body).status_code in (202, 400)
