"""The Gradio API as scripts use it: gradio_client against a live server with real workers."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.helpers import EXAMPLES, occupy_cpu
from tests.support.stack import wait_until, waiting_messages

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
OPERATIONS = ("image_generation", "face_swap", "background_removal", "object_removal", "style_transfer")


@pytest.fixture(scope="module")
def client(live_server: str) -> Iterator[Any]:
    from gradio_client import Client

    yield Client(live_server, verbose=False)


def editor(path: Path) -> dict[str, Any]:
    from gradio_client import handle_file

    return {"background": handle_file(str(path)), "layers": [], "composite": None}


def inputs(task_type: str, faces: tuple[Path, Path] = (EXAMPLES / "astronaut.jpg",) * 2) -> list[Any]:
    from gradio_client import handle_file

    photo = handle_file(str(EXAMPLES / "coffee.jpg"))
    return {
        "image_generation": ["a red fox in snow", "", 128, 128, 4, 0, 7, 1],
        "face_swap": [handle_file(str(faces[0])), handle_file(str(faces[1])), -1],
        "background_removal": [photo, "u2net", False, "", False, False],
        "object_removal": [editor(EXAMPLES / "coffee.jpg"), handle_file(str(EXAMPLES / "coffee_mask.png")), "auto", 2],
        "style_transfer": [photo, "starry-night", None, 0.8, "fast", False],
    }[task_type]


def done_message(task_type: str) -> str:
    """The status of a finished job: "auto" object removal without LaMa's weights says what ran instead."""
    from pipelines.object_removal import FALLBACK_NOTE, LamaEngine
    from settings import get_settings

    lama = LamaEngine().is_ready(get_settings())  # the session's tiny LaMa, once a test has built it
    return FALLBACK_NOTE if task_type == "object_removal" and not lama else "Done"


def test_view_api_lists_every_endpoint_by_name(client: Any) -> None:
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    expected = {f"/{name}" for name in OPERATIONS} | {f"/submit_{name}" for name in OPERATIONS}
    shared = {"/task_status", "/task_result", "/cancel_task", "/submit_batch", "/batch_status", "/cancel_batch"}
    assert expected | shared | {"/batch_result"} == set(api)
    style = api["/style_transfer"]
    assert [p["parameter_name"] for p in style["parameters"]] == [
        "image", "style", "style_image", "strength", "engine", "preserve_color", "then",
    ]  # fmt: skip
    assert [r["label"] for r in style["returns"]] == ["Result", "Task id", "Status"]


@pytest.mark.parametrize("task_type", ["style_transfer", "object_removal"])
def test_streaming_endpoint_gives_the_task_id_first_then_the_image(
    client: Any, task_type: str, live_server: str
) -> None:
    job = client.submit(*inputs(task_type), api_name=f"/{task_type}")
    wait_until(job.done, 60, interval=0.05, what=task_type)
    outputs = job.outputs()
    first_image, first_id, first_status = outputs[0]
    assert first_image is None and UUID.match(first_id) and first_status == "Submitted"
    image, task_id, status = outputs[-1]
    assert task_id == first_id and status == done_message(task_type)
    assert Image.open(image).size == (600, 400)
    # The same id works everywhere: task_result here, and the REST API.
    assert Image.open(client.predict(task_id, api_name="/task_result")).size == (600, 400)
    assert httpx.get(f"{live_server}/api/v1/tasks/{task_id}/status/").json()["status"] == "SUCCESS"


@pytest.mark.parametrize("task_type", OPERATIONS)
def test_submit_returns_an_id_at_once_and_task_status_follows_it(
    client: Any, task_type: str, engines: Path, faces: tuple[Path, Path]
) -> None:
    """Every tab's engine, through the Gradio API (tiny models where an engine needs weights)."""
    started = time.monotonic()
    task_id = client.predict(*inputs(task_type, faces), api_name=f"/submit_{task_type}")
    assert UUID.match(task_id) and time.monotonic() - started < 15  # at once, not after the job

    def finished() -> dict[str, Any] | None:
        status: dict[str, Any] = client.predict(task_id, api_name="/task_status")
        return status if status["status"] in ("SUCCESS", "FAILURE", "REVOKED") else None

    final = wait_until(finished, 120, interval=0.1, what=task_type)  # a first job loads its engine
    assert final["task_id"] == task_id and final["task_type"] == task_type
    assert final["status"] == "SUCCESS", final
    image = Image.open(client.predict(task_id, api_name="/task_result"))
    expected = {"image_generation": (128, 128), "face_swap": (640, 480)}.get(task_type, (600, 400))
    assert image.size == expected
    if task_type == "background_removal":
        assert image.mode == "RGBA"


def test_progress_streams_to_the_client(client: Any, live_server: str, photo: Any) -> None:
    blocker = occupy_cpu(live_server, photo)
    try:
        job = client.submit(*inputs("object_removal"), api_name="/object_removal")
        queued = wait_until(
            lambda: [out for out in job.outputs() if out[2].startswith("Queued — 1st in the cpu queue")],
            30,
            interval=0.05,
            what="the queued message",
        )
        assert queued
        progress = wait_until(lambda: job.status().progress_data, 10, interval=0.05, what="progress data")
        assert any("Queued" in (unit.desc or "") for unit in progress)
    finally:
        httpx.post(f"{live_server}/api/v1/tasks/{blocker}/cancel/")
    wait_until(job.done, 60, interval=0.05, what="the job")
    assert job.outputs()[-1][2] == done_message("object_removal")


def test_errors_reach_the_script_as_app_errors(client: Any) -> None:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="multiple of 8"):
        client.predict("a fox", "", 500, 512, 4, 0, -1, 1, api_name="/image_generation")
    with pytest.raises(AppError, match="Task not found"):
        client.predict("00000000-0000-4000-8000-000000000000", api_name="/task_status")
    with pytest.raises(AppError, match="Prompt is required"):
        client.predict("", "", 512, 512, 4, 0, -1, 1, api_name="/submit_image_generation")


def test_input_errors_speak_the_tabs_words(client: Any, tmp_path: Path) -> None:
    """The facts REST gives, in the labels of the tab's fields; never Gradio's internal error or a server path."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as missing:
        client.predict(None, None, -1, api_name="/face_swap")
    assert str(missing.value.message) == "Source face is required; Target photo is required"
    with pytest.raises(AppError, match=r"^Upload a photo first\. From the API, pass the photo as an image-editor"):
        client.predict(None, None, "auto", 0, api_name="/submit_object_removal")
    renamed = tmp_path / "notes.jpg"
    renamed.write_text("not a picture")
    with pytest.raises(AppError) as refused:
        client.predict(handle_file(str(renamed)), "mosaic", None, 1, "fast", False, api_name="/style_transfer")
    assert str(refused.value.message) == "Photo could not be decoded as an image (use PNG, JPEG or WebP)"


def test_cancel_task_stops_a_queued_job_and_refuses_a_finished_one(client: Any, live_server: str, photo: Any) -> None:
    from gradio_client.exceptions import AppError

    blocker = occupy_cpu(live_server, photo)
    try:
        task_id = client.predict(*inputs("object_removal"), api_name="/submit_object_removal")
        assert client.predict(task_id, api_name="/task_status")["status"] == "PENDING"
        assert client.predict(task_id, api_name="/cancel_task")["status"] == "REVOKED"
    finally:
        httpx.post(f"{live_server}/api/v1/tasks/{blocker}/cancel/")
    done = client.predict(*inputs("style_transfer"), api_name="/style_transfer")[1]
    with pytest.raises(AppError, match="already finished"):
        client.predict(done, api_name="/cancel_task")


def test_thirty_waiting_users_do_not_block_a_thirty_first(
    client: Any, live_server: str, photo: Any, redis_client: Any
) -> None:
    """Thirty streams wait on queued cpu jobs; a gpu job submitted after them still runs at once."""
    blocker = occupy_cpu(live_server, photo)
    waiting = [client.submit(*inputs("object_removal"), api_name="/object_removal") for _ in range(30)]
    try:
        wait_until(lambda: all(len(job.outputs()) >= 1 for job in waiting), 60, interval=0.2, what="30 task ids")
        assert not any(job.done() for job in waiting)
        started = time.monotonic()
        image, _task_id, status = client.predict(*inputs("style_transfer"), api_name="/style_transfer")
        assert status == "Done" and Image.open(image).size == (600, 400)
        assert time.monotonic() - started < 45  # not behind the thirty queued cpu jobs
        assert not any(job.done() for job in waiting)  # they are still waiting, not dropped
    finally:
        for job in waiting:
            if job.outputs():
                httpx.post(f"{live_server}/api/v1/tasks/{job.outputs()[0][1]}/cancel/")
        httpx.post(f"{live_server}/api/v1/tasks/{blocker}/cancel/")
    wait_until(lambda: all(job.done() for job in waiting), 30, interval=0.2, what="the streams to end")
    assert {job.outputs()[-1][2] for job in waiting} == {"Cancelled"}
    assert httpx.get(f"{live_server}/healthz").json()["queues"]["cpu"]["waiting"] == 0  # cancelled ones don't count
    wait_until(lambda: waiting_messages(redis_client, "cpu") == 0, 30, what="the worker to skip the cancelled messages")


def test_identical_uploads_submitted_at_once_all_go_through(client: Any, live_server: str) -> None:
    """Thirty scripts sending the same photo and mask at the same moment: none may lose its mask."""
    with ThreadPoolExecutor(30) as pool:
        ids = list(
            pool.map(lambda _: client.predict(*inputs("object_removal"), api_name="/submit_object_removal"), range(30))
        )
    assert len(set(ids)) == 30 and all(UUID.match(task_id) for task_id in ids)
    wait_until(
        lambda: all(httpx.get(f"{live_server}/api/v1/tasks/{t}/status/").json()["status"] == "SUCCESS" for t in ids),
        90,
        interval=0.5,
        what="the 30 jobs",
    )


def test_generation_streams_step_previews_before_the_image(client: Any, engines: Path) -> None:
    """While a diffusion job runs, the streaming endpoint shows the engine's low-resolution previews."""
    job = client.submit("a red fox in snow", "", 320, 320, 50, 0, 7, 1, api_name="/image_generation")
    wait_until(job.done, 120, interval=0.05, what="generation")
    outputs = job.outputs()
    *running, (image, _task_id, status) = outputs
    assert status == "Done" and Image.open(image).size == (320, 320)
    previews = [Image.open(update[0]) for update in running if update[0]]
    assert previews, [update[2] for update in running]
    assert all(max(preview.size) <= 256 for preview in previews)
    assert any("step" in update[2] for update in running)
