"""Batches through the Gradio API, as scripts use it: submit_batch, batch_status, cancel_batch and
batch_result with gradio_client, against a live server with real workers."""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.helpers import EXAMPLES, occupy_cpu
from tests.support.stack import wait_until

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
FINISHED = ("SUCCESS", "FAILURE", "REVOKED")


@pytest.fixture(scope="module")
def client(live_server: str) -> Iterator[Any]:
    from gradio_client import Client

    yield Client(live_server, verbose=False)


def files(*paths: Path) -> list[Any]:
    from gradio_client import handle_file

    return [handle_file(str(path)) for path in paths]


def finished(client: Any, batch_id: str, timeout: float = 120) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        status: dict[str, Any] = client.predict(batch_id, api_name="/batch_status")
        return status if status["status"] in FINISHED else None

    result: dict[str, Any] = wait_until(ended, timeout, interval=0.2, what=f"batch {batch_id}")
    return result


def test_the_batch_endpoints_are_documented_with_their_parameters(client: Any) -> None:
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert [p["parameter_name"] for p in api["/submit_batch"]["parameters"]] == [
        "task_type", "files", "parameters", "prompt", "mask", "source_face", "style_image", "seeds",
    ]  # fmt: skip
    assert [p["parameter_has_default"] for p in api["/submit_batch"]["parameters"]] == [False] + [True] * 7
    for name in ("/batch_status", "/cancel_batch", "/batch_result"):
        assert [p["parameter_name"] for p in api[name]["parameters"]] == ["batch_id"]


def test_a_style_batch_from_submit_to_zip(client: Any, live_server: str) -> None:
    photos = files(EXAMPLES / "coffee.jpg", EXAMPLES / "chelsea.jpg")
    batch_id = client.predict(
        "style_transfer", photos, '{"style": "mosaic", "strength": 0.8}', api_name="/submit_batch"
    )
    assert UUID.match(batch_id)
    status = finished(client, batch_id)
    assert status["status"] == "SUCCESS" and status["message"] == "2 of 2 done" and status["total"] == 2
    assert [item["name"] for item in status["items"]] == ["coffee.jpg", "chelsea.jpg"]
    assert status == httpx.get(f"{live_server}/api/v1/batches/{batch_id}/").json()  # the REST status, as is
    archive = zipfile.ZipFile(client.predict(batch_id, api_name="/batch_result"))
    assert sorted(archive.namelist()) == ["chelsea.png", "coffee.png", "manifest.json"]
    with archive.open("chelsea.png") as png:
        assert Image.open(png).size == (451, 300)
    # Each item is an ordinary job: its task id works on the task endpoints too.
    task_id = status["items"][0]["task_id"]
    assert client.predict(task_id, api_name="/task_status")["status"] == "SUCCESS"
    # Cancelling a finished batch changes nothing: its status, results kept.
    assert client.predict(batch_id, api_name="/cancel_batch")["status"] == "SUCCESS"


def test_a_face_swap_batch_shares_the_source_face(client: Any, engines: Path, faces: tuple[Path, Path]) -> None:
    source, target = faces
    batch_id = client.predict(
        "face_swap", files(target, target), source_face=files(source)[0], api_name="/submit_batch"
    )
    status = finished(client, batch_id)
    assert status["status"] == "SUCCESS", status
    names = zipfile.ZipFile(client.predict(batch_id, api_name="/batch_result")).namelist()
    assert sorted(names) == ["manifest.json", "target-2.png", "target.png"]  # same names: de-duplicated


def test_cancel_batch_stops_queued_items(client: Any, live_server: str, photo: Any) -> None:
    blocker = occupy_cpu(live_server, photo)
    try:
        cups = files(*[EXAMPLES / "coffee.jpg"] * 3)
        mask = files(EXAMPLES / "coffee_mask.png")[0]
        batch_id = client.predict("object_removal", cups, '{"engine": "telea"}', mask=mask, api_name="/submit_batch")
        assert client.predict(batch_id, api_name="/batch_status")["status"] == "PENDING"
        status = client.predict(batch_id, api_name="/cancel_batch")
        assert status["status"] == "REVOKED" and status["counts"]["REVOKED"] == 3
    finally:
        httpx.post(f"{live_server}/api/v1/tasks/{blocker}/cancel/")
    manifest = json.loads(zipfile.ZipFile(client.predict(batch_id, api_name="/batch_result")).read("manifest.json"))
    assert [item["status"] for item in manifest["items"]] == ["REVOKED"] * 3


def test_generation_batches_run_one_item_per_prompt_line_and_seed(client: Any, engines: Path) -> None:
    parameters = json.dumps({"width": 64, "height": 64, "steps": 2})
    batch_id = client.predict(  # no files: keyword arguments, as the README shows
        "image_generation",
        parameters=parameters,
        prompt="a red fox\n\na blue bird",
        seeds="7, 8",
        api_name="/submit_batch",
    )
    status = finished(client, batch_id)
    assert status["status"] == "SUCCESS" and status["total"] == 4
    assert [item["name"] for item in status["items"]] == [
        "a red fox (seed 7)", "a red fox (seed 8)", "a blue bird (seed 7)", "a blue bird (seed 8)",
    ]  # fmt: skip


def test_batch_errors_reach_the_script_readably(client: Any, tmp_path: Path) -> None:
    from gradio_client.exceptions import AppError

    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    with pytest.raises(AppError, match=r"notes\.txt \(items\[1\]\.image\): image could not be decoded"):
        client.predict("background_removal", files(EXAMPLES / "coffee.jpg", notes), api_name="/submit_batch")
    with pytest.raises(AppError, match="parameters must be a JSON object"):
        client.predict("background_removal", files(EXAMPLES / "coffee.jpg"), "{model: u2net}", api_name="/submit_batch")
    with pytest.raises(AppError, match="Unknown task_type"):
        client.predict("paint_by_numbers", files(EXAMPLES / "coffee.jpg"), api_name="/submit_batch")
    with pytest.raises(AppError, match="files are required"):
        client.predict("style_transfer", [], api_name="/submit_batch")
    for name in ("/batch_status", "/cancel_batch", "/batch_result"):
        with pytest.raises(AppError, match="Batch not found"):
            client.predict("00000000-0000-4000-8000-000000000000", api_name=name)
