"""Batches through REST, Redis and the real worker processes: many items, one status, one zip."""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines.background_removal import rembg_home
from pipelines.face_swap import insightface_root
from settings import get_settings
from tasks.store import BATCH_LEVELS, broker_list, job_key
from tests.conftest import b64, png_bytes
from tests.integration.conftest import FINISHED, Api
from tests.integration.test_jobs import SMALL, steps_job
from tests.support.operations import executions_key
from tests.support.stack import job_ids, settle, wait_until
from tests.support.tiny_onnx import build_insightface_models, build_rembg_models, draw_faces


def batch_waiting(db: Any, queue: str = "cpu") -> int:
    """Messages waiting in the queue's batch levels."""
    return sum(int(db.llen(broker_list(queue, level))) for level in range(BATCH_LEVELS[0], BATCH_LEVELS[1] + 1))


def submit_batch(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    response = api.http.post("/api/v1/batches/", json=body)
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


def batch_status(api: Api, batch_id: str) -> dict[str, Any]:
    response = api.http.get(f"/api/v1/batches/{batch_id}/")
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    return status


def wait_batch(api: Api, batch_id: str, timeout: float = 120) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        status = batch_status(api, batch_id)
        return status if status["status"] in FINISHED else None

    result: dict[str, Any] = wait_until(ended, timeout, interval=0.1, what=f"batch {batch_id} to end")
    return result


def zip_of(api: Api, batch_id: str) -> zipfile.ZipFile:
    response = api.http.get(f"/api/v1/batches/{batch_id}/result/?format=zip")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    return zipfile.ZipFile(io.BytesIO(response.content))


def photos(count: int, size: tuple[int, int] = (64, 48)) -> list[Image.Image]:
    """Distinct small pictures: a bright disc on a dark ground, moving with the index."""
    pictures = []
    for index in range(count):
        picture = Image.new("RGB", size, (20 + index % 50, 30, 40))
        x = 8 + index % (size[0] - 32)
        ImageDraw.Draw(picture).ellipse((x, 10, x + 24, 34), fill=(240, 220, 200))
        pictures.append(picture)
    return pictures


@pytest.fixture(scope="module")
def tiny_models() -> None:
    build_rembg_models(rembg_home(get_settings()), ("u2net",))
    build_insightface_models(insightface_root(get_settings()))


# -- 50-item batches of each image operation ----------------------------------------------------
def test_a_50_item_background_removal_batch(api: Api, tiny_models: None) -> None:
    pictures = photos(50)
    items = [{"image": b64(picture), "name": f"shoe-{index:02d}.jpg"} for index, picture in enumerate(pictures)]
    answer = submit_batch(api, {"task_type": "background_removal", "parameters": {"model": "u2net"}, "items": items})
    assert answer["total"] == 50 and len(set(answer["task_ids"])) == 50 and answer["status"] == "PENDING"
    final = wait_batch(api, answer["batch_id"], timeout=240)
    assert final["status"] == "SUCCESS" and final["progress"] == 100, final["message"]
    assert final["counts"]["SUCCESS"] == 50 and final["message"] == "50 of 50 done"
    assert [item["name"] for item in final["items"]] == [item["name"] for item in items]
    archive = zip_of(api, answer["batch_id"])
    assert sorted(archive.namelist()) == sorted([f"shoe-{index:02d}.png" for index in range(50)] + ["manifest.json"])
    cutout = Image.open(io.BytesIO(archive.read("shoe-07.png")))
    assert cutout.mode == "RGBA" and cutout.size == (64, 48)
    # Each item is an ordinary job: its own status and result.
    one = answer["task_ids"][7]
    assert api.status(one)["status"] == "SUCCESS"
    alone = api.http.get(f"/api/v1/tasks/{one}/result/?format=png").content
    assert alone == archive.read("shoe-07.png")


def test_a_50_item_object_removal_batch_with_one_mask_for_all(api: Api) -> None:
    pictures = photos(50)
    mask = Image.new("L", (64, 48), 0)
    ImageDraw.Draw(mask).rectangle((0, 6, 63, 38), fill=255)  # the band every disc lies in
    body = {"task_type": "object_removal", "mask": b64(mask), "items": [{"image": b64(p)} for p in pictures]}
    answer = submit_batch(api, body)
    final = wait_batch(api, answer["batch_id"])
    assert final["status"] == "SUCCESS", final["message"]
    archive = zip_of(api, answer["batch_id"])
    names = sorted(name for name in archive.namelist() if name != "manifest.json")
    assert names == [f"item-{number:04d}.png" for number in range(1, 51)]  # no names: numbered
    for name in names[:5]:
        pixels = np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGB"), dtype=int)
        assert pixels[:, :, 0].max() < 200  # the bright disc was removed


def test_a_50_item_style_transfer_batch(api: Api) -> None:
    pictures = photos(50)
    body = {
        "task_type": "style_transfer",
        "parameters": {"style": "mosaic", "engine": "fast"},
        "items": [{"image": b64(picture), "name": f"portrait {index}.png"} for index, picture in enumerate(pictures)],
    }
    answer = submit_batch(api, body)
    final = wait_batch(api, answer["batch_id"], timeout=240)
    assert final["status"] == "SUCCESS", final["message"]
    archive = zip_of(api, answer["batch_id"])
    styled = Image.open(io.BytesIO(archive.read("portrait-3.png"))).convert("RGB")
    assert styled.size == (64, 48)
    assert np.abs(np.asarray(styled, dtype=int) - np.asarray(pictures[3], dtype=int)).mean() > 5


def test_a_50_item_face_swap_batch_onto_many_targets(api: Api, tiny_models: None) -> None:
    source = draw_faces((320, 240), [(120, 60, 96)], colours=[(236, 178, 140)])
    targets = [draw_faces((320, 240), [(40 + index % 100, 64, 96)]) for index in range(50)]
    body = {
        "task_type": "face_swap",
        "image": b64(source),
        "items": [{"target_image": b64(target), "name": f"guest-{index}.png"} for index, target in enumerate(targets)],
    }
    answer = submit_batch(api, body)
    final = wait_batch(api, answer["batch_id"], timeout=240)
    assert final["status"] == "SUCCESS", final["message"]
    archive = zip_of(api, answer["batch_id"])
    swapped = np.asarray(Image.open(io.BytesIO(archive.read("guest-5.png"))).convert("RGB"), dtype=int)
    assert np.abs(swapped - np.asarray(targets[5], dtype=int)).sum() > 0


# -- the zip and its manifest ---------------------------------------------------------------------
def test_the_zip_names_items_safely_and_its_manifest_says_what_became_of_each(api: Api) -> None:
    items = [
        {"image": b64(SMALL), "name": "../../etc/passwd.jpg"},
        {"image": b64(SMALL), "name": "Shoe 01.JPG"},
        {"image": b64(SMALL), "name": "shoe 01.png"},  # the same stem again, another case
        {"image": b64(SMALL)},
        {"image": b64(SMALL), "name": "broken.png", "parameters": {"fail": True}},
    ]
    answer = submit_batch(api, {"task_type": "test_steps", "parameters": {"steps": 1, "delay": 0}, "items": items})
    final = wait_batch(api, answer["batch_id"])
    assert final["status"] == "FAILURE" and final["counts"]["FAILURE"] == 1 and final["counts"]["SUCCESS"] == 4
    assert final["items"][4]["message"] == "Asked to fail"
    archive = zip_of(api, answer["batch_id"])
    assert set(archive.namelist()) == {"passwd.png", "Shoe-01.png", "shoe-01-2.png", "item-0004.png", "manifest.json"}
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["batch_id"] == answer["batch_id"] and manifest["status"] == "FAILURE"
    entries = manifest["items"]
    assert [entry["task_id"] for entry in entries] == answer["task_ids"]
    assert entries[4]["status"] == "FAILURE" and entries[4]["file"] is None and entries[4]["message"] == "Asked to fail"
    assert entries[2] == {
        "index": 2,
        "name": "shoe 01.png",
        "task_id": answer["task_ids"][2],
        "status": "SUCCESS",
        "message": "Done",
        "file": "shoe-01-2.png",
    }


def test_multipart_files_and_a_zip_archive_make_batches(api: Api, photo: Image.Image) -> None:
    files = [("image", (f"photo-{index}.jpg", png_bytes(SMALL), "image/png")) for index in range(3)]
    response = api.http.post(
        "/api/v1/batches/", data={"task_type": "test_steps", "parameters": '{"steps": 1, "delay": 0}'}, files=files
    )
    assert response.status_code == 202, response.text
    final = wait_batch(api, response.json()["batch_id"])
    assert [item["name"] for item in final["items"]] == ["photo-0.jpg", "photo-1.jpg", "photo-2.jpg"]

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("shoot/a.png", png_bytes(SMALL))
        archive.writestr("shoot/b.jpg", png_bytes(SMALL.convert("RGB"), "JPEG"))
        archive.writestr("__MACOSX/shoot/._a.png", b"resource fork")
        archive.writestr(".DS_Store", b"finder")
    response = api.http.post(
        "/api/v1/batches/",
        data={"task_type": "test_steps", "parameters": '{"steps": 1, "delay": 0}'},
        files={"archive": ("shoot.zip", buffer.getvalue(), "application/zip")},
    )
    assert response.status_code == 202, response.text
    final = wait_batch(api, response.json()["batch_id"])
    assert final["status"] == "SUCCESS" and [item["name"] for item in final["items"]] == ["a.png", "b.jpg"]


def zipped(entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_hostile_archives_are_refused_with_nothing_enqueued(api: Api, redis_client: Any) -> None:
    settle(redis_client)
    before = job_ids(redis_client)
    cases = {
        "outside": zipped({"../x.png": png_bytes(SMALL)}),
        "absolute": zipped({"/etc/x.png": png_bytes(SMALL)}),
        "bomb": zipped({"bomb.png": b"\0" * (60 << 20)}, zipfile.ZIP_DEFLATED),
        "not a zip": b"PK\x03\x04 not really",
        "not an image": zipped({"notes.txt": b"hello"}),
        "empty": zipped({}),
    }
    for case, data in cases.items():
        response = api.http.post(
            "/api/v1/batches/", data={"task_type": "test_steps"}, files={"archive": ("a.zip", data, "application/zip")}
        )
        assert response.status_code == 400, (case, response.text)
        assert list(response.json()["details"]) == ["archive"], case
    assert job_ids(redis_client) == before


def test_a_bad_item_refuses_the_whole_batch_naming_it(api: Api, redis_client: Any) -> None:
    settle(redis_client)
    before, waiting = job_ids(redis_client), batch_waiting(redis_client)
    good = {"image": b64(SMALL)}
    cases = [
        ({"items": [good, good, good, {"image": "%%%"}]}, {"items[3].image": ["image is not valid base64"]}),
        ({"items": [good, {"image": b64(SMALL), "mask": b64(SMALL)}]}, {"items[1].mask": None}),
        ({"parameters": {"steps": 0}, "items": [good, good]}, {"parameters.steps": None}),
        (
            {"items": [good, {"parameters": {"steps": "many"}}]},
            {"items[1].parameters.steps": None, "items[1].image": None},
        ),
        ({"items": []}, {"items": None}),
        ({"items": "all of them"}, {"items": None}),
        ({"items": [good, "x"]}, {"items[1]": None}),
        ({"items": [{**good, "colour": "red"}]}, {"items[0].colour": None}),
        ({"items": [good] * 501}, {"items": ["At most 500 items per batch (ATELIER_MAX_BATCH_ITEMS), got 501"]}),
    ]
    for extra, expected in cases:
        response = api.http.post("/api/v1/batches/", json={"task_type": "test_steps", **extra})
        assert response.status_code == 400, response.text
        details = response.json()["details"]
        assert set(details) == set(expected), (extra, details)
        for key, messages in expected.items():
            if messages is not None:
                assert details[key] == messages
    unknown = api.http.post("/api/v1/batches/", json={"task_type": "paint", "items": [good]})
    assert unknown.status_code == 400 and "task_type" in unknown.json()["details"]
    assert job_ids(redis_client) == before
    assert batch_waiting(redis_client) == waiting


def test_unknown_batch_ids_are_404(api: Api) -> None:
    for path in ("nope/", "nope/cancel/", "nope/result/?format=zip", f"{'0' * 8}-0000-4000-8000-{'0' * 12}/"):
        method = api.http.post if "cancel" in path else api.http.get
        response = method(f"/api/v1/batches/{path}")
        assert response.status_code == 404, path
        assert response.json()["error"] == "Batch not found"
    assert api.http.get(f"/api/v1/tasks/{'0' * 8}-0000-4000-8000-{'0' * 12}/status/").status_code == 404


# -- cancel and order -------------------------------------------------------------------------------
def test_cancel_mid_batch_stops_every_unfinished_item(api: Api, redis_client: Any) -> None:
    items = [{"image": b64(SMALL), "prompt": f"cancel-mid-{index}"} for index in range(8)]
    answer = submit_batch(api, {"task_type": "test_steps", "parameters": {"steps": 20, "delay": 0.05}, "items": items})
    batch_id = answer["batch_id"]
    wait_until(lambda: batch_status(api, batch_id)["counts"]["SUCCESS"] >= 2, 60, what="two items done")
    response = api.http.post(f"/api/v1/batches/{batch_id}/cancel/")
    assert response.status_code == 200
    final = wait_batch(api, batch_id, timeout=30)
    assert final["status"] == "REVOKED"
    assert final["counts"]["SUCCESS"] >= 2 and final["counts"]["REVOKED"] >= 5
    assert final["counts"]["SUCCESS"] + final["counts"]["REVOKED"] == 8
    time.sleep(1.0)  # the worker pops the cancelled messages and skips them
    for index, item in enumerate(final["items"]):
        runs = redis_client.get(executions_key(f"cancel-mid-{index}"))
        if item["status"] == "SUCCESS":
            assert runs == b"1"
        assert int(runs or 0) <= 1  # a cancelled queued item never started; the running one stopped
    assert len(zip_of(api, batch_id).namelist()) == final["counts"]["SUCCESS"] + 1
    again = api.http.post(f"/api/v1/batches/{batch_id}/cancel/")
    assert again.status_code == 200 and again.json()["status"] == "REVOKED"


def test_a_single_job_overtakes_a_queued_batch(api: Api, redis_client: Any) -> None:
    """A single job waits for the item the worker is running, not for the 30 queued behind it."""
    settle(redis_client)
    items = [{"image": b64(SMALL), "prompt": f"overtaken-{index}"} for index in range(30)]
    answer = submit_batch(api, {"task_type": "test_steps", "parameters": {"steps": 5, "delay": 0.05}, "items": items})
    batch_id = answer["batch_id"]
    wait_until(lambda: batch_status(api, batch_id)["counts"]["SUCCESS"] >= 1, 60, what="the batch to start")
    single = api.submit(steps_job(steps=1, delay=0, marker="overtaker"))
    submitted = float(redis_client.hget(job_key(single), "created"))  # when it was queued, however slow the request
    queued = api.status(single)
    if queued["status"] == "PENDING":
        assert queued["position"] == 1  # the batch's items are behind it
    assert api.wait(single, timeout=30)["status"] == "SUCCESS"
    single_started = float(redis_client.hget(job_key(single), "started"))
    started_between = [
        task_id
        for task_id in answer["task_ids"]
        if (started := redis_client.hget(job_key(task_id), "started")) and submitted < float(started) < single_started
    ]
    # One worker process: at most one item (popped just before the single job arrived) starts first.
    assert len(started_between) <= 1, started_between
    last_item = api.status(answer["task_ids"][-1])
    if last_item["status"] == "PENDING":
        assert last_item["position"] > 1
    api.http.post(f"/api/v1/batches/{batch_id}/cancel/")
    wait_batch(api, batch_id, timeout=30)


def test_a_batch_record_expires_with_its_items(api: Api, redis_client: Any) -> None:
    answer = submit_batch(
        api, {"task_type": "test_steps", "parameters": {"steps": 1, "delay": 0}, "items": [{"image": b64(SMALL)}]}
    )
    wait_batch(api, answer["batch_id"])
    batch_ttl = redis_client.ttl(f"atelier:batch:{answer['batch_id']}")
    item_ttl = redis_client.ttl(job_key(answer["task_ids"][0]))
    assert 0 < batch_ttl <= get_settings().result_ttl and abs(batch_ttl - item_ttl) <= 2


def test_a_batch_item_is_sent_at_the_batch_priority(api: Api, redis_client: Any, busy_cpu: str) -> None:
    """Its message waits in the batch priority's list, behind the queue's single jobs."""
    answer = submit_batch(
        api, {"task_type": "test_steps", "parameters": {"steps": 1, "delay": 0}, "items": [{"image": b64(SMALL)}]}
    )
    waiting = [
        json.loads(raw)
        for level in range(BATCH_LEVELS[0], BATCH_LEVELS[1] + 1)
        for raw in redis_client.lrange(broker_list("cpu", level), 0, -1)
    ]
    assert answer["task_ids"][0] in {message["headers"]["id"] for message in waiting}
    assert all(base64.b64decode(message["body"]) for message in waiting)  # ids and parameters only
    single = api.submit(steps_job(steps=1, delay=0))
    assert api.status(single)["position"] == 1
    assert api.status(answer["task_ids"][0])["position"] == 2
    api.http.post(f"/api/v1/batches/{answer['batch_id']}/cancel/")
    api.cancel(single)
