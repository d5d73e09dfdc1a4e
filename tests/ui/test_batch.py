"""The page's batches without Redis: how a tab's widgets and files become a batch, how its status
reads, and how the section follows it (a stand-in job client)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest
from PIL import Image, ImageDraw

import ui.batch
import ui.batch_api
import ui.common
from app import free_port
from jobs import BatchItemStatus, BatchNotFound, InvalidSubmission, JobClient, JobState, ServiceUnavailable
from jobs.status import summarise_batch
from settings import Settings
from tests.support.loop import run_async
from ui import face_swap
from ui.batch import (
    BatchRequest,
    explain_items,
    file_items,
    follow_batch,
    gallery_of,
    generation_items,
    progress_text,
    prompt_lines,
    seeds_for,
    shared_fields,
    start,
)
from ui.batch_api import batch_request, parameters_of, seeds_of
from ui.common import UNREACHABLE
from ui.object_removal import BATCH_NO_MASK, batch_submission
from ui.tasks import batch_label, remember

BATCH = "11111111-1111-4111-8111-111111111111"


def item(index: int, state: JobState, name: str | None = None, message: str = "", progress: int = 0) -> BatchItemStatus:
    return BatchItemStatus(
        task_id=f"task-{index}", name=name, status=state, progress=progress, message=message or state.value.title()
    )


def batch(*items: BatchItemStatus, cancelled: bool = False) -> Any:
    return summarise_batch(BATCH, "style_transfer", items, cancelled)


def test_the_shared_fields_are_the_tabs_submission_with_its_images_read(tmp_path: Path) -> None:
    (tmp_path / "face.png").write_bytes(b"face")
    job: Any = {"images": {"image": str(tmp_path / "face.png"), "target_image": None}, "parameters": {"a": 1}}
    assert shared_fields("face_swap", job) == {"task_type": "face_swap", "parameters": {"a": 1}, "image": b"face"}
    job = {"images": {"mask": b"mask"}, "parameters": {}, "prompt": "a cat"}
    assert shared_fields("object_removal", job)["mask"] == b"mask"
    assert shared_fields("object_removal", job)["prompt"] == "a cat"


def test_each_file_is_an_item_named_after_it(tmp_path: Path) -> None:
    paths = []
    for name in ("shoe-01.jpg", "shoe-02.jpg"):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(name.encode())
    assert file_items([str(path) for path in paths], "target_image") == [
        {"name": "shoe-01.jpg", "target_image": b"shoe-01.jpg"},
        {"name": "shoe-02.jpg", "target_image": b"shoe-02.jpg"},
    ]
    assert file_items(None, "image") == []


def test_prompts_and_seeds_make_one_item_each() -> None:
    assert prompt_lines("  a red fox \n\n a blue bird\n") == ["a red fox", "a blue bird"]
    assert seeds_for(7, 3) == [7, 8, 9] and seeds_for(2**32 - 1, 2) == [2**32 - 1, 0]
    assert seeds_for(None, 1) == [None]
    drawn = seeds_for(None, 4)
    assert len(drawn) == 4 and all(isinstance(seed, int) for seed in drawn)
    items = generation_items(["a red fox", "x" * 100], [7, None])
    assert items[0] == {"prompt": "a red fox", "name": "a red fox (seed 7)", "parameters": {"seed": 7}}
    assert items[1] == {"prompt": "a red fox", "name": "a red fox"}
    assert items[3]["prompt"] == "x" * 100 and items[3]["name"] == "x" * 79 + "…"


def test_an_items_problem_is_told_by_its_name() -> None:
    details = {"items[1].mask": ["mask is 600×400 but image is 451×300"], "parameters.engine": ["Unknown engine"]}
    assert explain_items(details, ["coffee.jpg", "chelsea.jpg"]) == (
        "Invalid input — chelsea.jpg (items[1].mask): mask is 600×400 but image is 451×300; "
        "parameters.engine: Unknown engine"
    )
    assert explain_items({"items[0].prompt": ["Prompt is required"]}, [None]).startswith("Invalid input — item 1 (")


def test_the_status_line_counts_says_what_runs_and_why_items_failed() -> None:
    status = batch(
        item(0, JobState.SUCCESS, "a.jpg"),
        item(1, JobState.FAILURE, "b.jpg", "No face found in the source image"),
        item(2, JobState.PROCESSING, "c.jpg", "Applying style", 40),
        item(3, JobState.PENDING, "d.jpg", "Queued — 1st in the gpu queue"),
    )
    assert progress_text(status) == (
        "1 of 4 done · 1 failed · 1 running\nc.jpg: Applying style\nFailed: b.jpg: No face found in the source image"
    )
    waiting = batch(item(0, JobState.PENDING, None, "Queued — 2nd in the gpu queue"), item(1, JobState.PENDING))
    assert progress_text(waiting) == "0 of 2 done\nitem 1: Queued — 2nd in the gpu queue"
    cancelled = batch(item(0, JobState.SUCCESS), item(1, JobState.REVOKED), cancelled=True)
    assert progress_text(cancelled) == "Cancelled · 1 of 2 done · 1 cancelled"
    same = batch(*[item(index, JobState.FAILURE, message="Model missing") for index in range(7)])
    assert progress_text(same).splitlines()[1:] == ["Failed (7: item 1, item 2, item 3, … 4 more): Model missing"]
    reasons = batch(*[item(index, JobState.FAILURE, message=f"Bad {index % 7}") for index in range(9)])
    lines = progress_text(reasons).splitlines()
    assert lines[1:3] == ["Failed (2: item 1, item 8): Bad 0", "Failed (2: item 2, item 9): Bad 1"]
    assert lines[-1] == "… 2 more failed for other reasons (manifest.json in the zip lists them all)"


def test_the_gallery_keeps_the_batchs_order() -> None:
    status = batch(item(0, JobState.SUCCESS, "a.jpg"), item(1, JobState.SUCCESS, "b.jpg"), item(2, JobState.PENDING))
    shown = {"task-1": ("/b.png", "b.jpg"), "task-0": ("/a.png", "a.jpg"), "task-9": (None, "gone")}
    assert gallery_of(status, shown) == [("/a.png", "a.jpg"), ("/b.png", "b.jpg")]


def test_the_api_arguments_make_the_same_batch(tmp_path: Path) -> None:
    photo = tmp_path / "cup.jpg"
    photo.write_bytes(b"cup")
    request = batch_request("face_swap", [str(photo)], '{"face_index": 0}', "", {"image": str(photo)}, "")
    assert request == BatchRequest(
        {"task_type": "face_swap", "parameters": {"face_index": 0}, "image": b"cup"},
        [{"name": "cup.jpg", "target_image": b"cup"}],
    )
    generation = batch_request("image_generation", None, "", "a fox\nan owl", {}, "1, 2")
    assert [item["name"] for item in generation.items] == [
        "a fox (seed 1)",
        "a fox (seed 2)",
        "an owl (seed 1)",
        "an owl (seed 2)",
    ]
    assert "prompt" not in generation.fields
    assert parameters_of("") == {} and parameters_of(' {"style": "mosaic"} ') == {"style": "mosaic"}
    assert seeds_of("") == [None] and seeds_of("7 8,9") == [7, 8, 9]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("style_transfer", [], "", "", {}, ""), "files: files are required"),
        (("style_transfer", None, "[1]", "", {}, ""), "parameters: parameters must be a JSON object such as"),
        (("style_transfer", None, "{", "", {}, ""), "parameters: parameters must be a JSON object: Expecting"),
        (("image_generation", ["a.png"], "", "a fox", {}, ""), "files: image_generation takes no files"),
        (("image_generation", None, "", " \n ", {}, ""), "prompt: Prompt is required for image_generation"),
        (("image_generation", None, "", "a fox", {}, "7, -1"), "seeds: seeds must be whole numbers"),
        (("style_transfer", None, "", "", {}, "7"), "seeds: seeds are for image_generation"),
    ],
)
def test_bad_api_arguments_name_the_argument(arguments: tuple[Any, ...], message: str) -> None:
    with pytest.raises(gr.Error, match=message.replace("(", r"\(")):
        batch_request(*arguments)


def test_source_face_is_for_face_swap_and_needed_there() -> None:
    with pytest.raises(gr.Error, match="source_face is for face_swap"):
        ui.batch_api.submit_batch("style_transfer", [], source_face="face.png")
    with pytest.raises(gr.Error, match="source_face is required for face_swap"):
        ui.batch_api.submit_batch("face_swap", ["target.png"])
    with pytest.raises(gr.Error, match="Upload the source face first"):
        face_swap.batch_submission(None, None, -1)
    assert face_swap.batch_submission("face.png", "ignored.png", 0) == {
        "images": {"image": "face.png", "target_image": None},
        "parameters": {"face_index": 0},
    }


def test_a_batch_of_object_removals_shares_one_mask(tmp_path: Path) -> None:
    photo = Image.new("RGB", (40, 30), (90, 120, 150))
    uploaded = Image.new("L", photo.size, 0)
    ImageDraw.Draw(uploaded).rectangle((5, 5, 14, 14), fill=255)
    uploaded.save(tmp_path / "mask.png")
    alone = batch_submission(None, str(tmp_path / "mask.png"), "telea", 2)
    assert alone == {
        "images": {"mask": (tmp_path / "mask.png").read_bytes()},
        "parameters": {"dilate": 2, "engine": "telea"},
    }
    layer = Image.new("RGBA", photo.size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle((20, 20, 29, 29), fill=(255, 255, 255, 200))
    painted = batch_submission({"background": photo, "layers": [layer]}, str(tmp_path / "mask.png"), "auto", 0)
    assert set(painted["images"]) == {"mask"} and painted["parameters"] == {"dilate": 0}
    mask = Image.open(io.BytesIO(painted["images"]["mask"])).convert("L")
    assert (np.asarray(mask) > 127).sum() == 200  # painted and uploaded, together
    with pytest.raises(gr.Error, match=BATCH_NO_MASK[:30]):
        batch_submission({"background": None, "layers": [], "composite": None}, None, "auto", 0)


def test_batches_show_in_the_recent_list_with_their_size() -> None:
    assert batch_label("style_transfer", 12.0) == "Style transfer · batch of 12 items"
    assert batch_label("face_swap", 1) == "Face swap · batch of 1 item"
    rows, table = remember(BATCH, batch_label("style_transfer", 3), [["older", "Face swap", "10:00:00"]])
    assert rows == table and rows[0][:2] == [BATCH, "Style transfer · batch of 3 items"] and len(rows) == 2
    assert remember("job", "object_removal", rows)[0][0][1] == "Remove object"  # titles, not internal names


class FakeClient:
    """What the batch section asks of the job client, answering from a script of statuses."""

    def __init__(self, statuses: list[Any] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.submitted: list[tuple[Any, Any]] = []
        self.admitted = 0
        self.callers: list[Any] = []

    def caller(self, user: str | None, headers: Any, peer: str | None) -> str:
        return f"caller {user}@{peer}"

    def admit(self, *args: Any) -> None:
        self.admitted += 1

    def submit_batch(self, fields: Any, items: Any, caller: Any = None) -> dict[str, Any]:
        self.callers.append(caller)
        if not all("image" in item for item in items):
            raise InvalidSubmission({"items[0].image": ["image is required for style_transfer"]})
        self.submitted.append((fields, items))
        return {"batch_id": BATCH, "total": len(items)}

    def batch_status(self, batch_id: str, caller: Any = None) -> Any:
        self.callers.append(caller)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if isinstance(status, Exception):
            raise status
        return status

    def result(self, task_id: str, caller: Any = None) -> tuple[None, dict[str, Any], bytes]:
        return None, {}, f"png of {task_id}".encode()

    def batch_archive(self, batch_id: str, caller: Any = None) -> tuple[Any, io.BytesIO]:
        self.callers.append(caller)
        data = io.BytesIO()
        with zipfile.ZipFile(data, "w") as archive:
            archive.writestr("manifest.json", json.dumps({"batch_id": batch_id}))
        data.seek(0)
        return self.statuses[-1], data


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeClient]:
    client = FakeClient()
    for module in (ui.batch, ui.common, ui.batch_api):
        monkeypatch.setattr(module, "get_client", lambda: client)
    monkeypatch.setattr(ui.common, "RESULTS", tmp_path)
    monkeypatch.setattr(ui.batch, "YIELD_EVERY", 0)
    monkeypatch.setattr(ui.batch, "POLL_FIRST", 0)
    monkeypatch.setattr(ui.batch, "POLL_MAX", 0)
    yield client


def test_the_section_follows_a_batch_until_its_zip(fake: FakeClient) -> None:
    fake.statuses = [
        batch(item(0, JobState.PENDING, "a.jpg", "Queued — 1st in the gpu queue"), item(1, JobState.PENDING, "b.jpg")),
        batch(item(0, JobState.SUCCESS, "a.jpg"), item(1, JobState.PROCESSING, "b.jpg", "Applying style", 50)),
        batch(item(0, JobState.SUCCESS, "a.jpg"), item(1, JobState.SUCCESS, "b.jpg")),
    ]
    reported: list[tuple[Any, str]] = []

    def progress(fraction: Any, desc: str = "") -> None:
        reported.append((fraction, desc))

    async def updates() -> list[Any]:
        return [update async for update in follow_batch(BATCH, 2, progress, lambda path: path)]  # type: ignore[arg-type]

    *running, final = run_async(updates())
    assert [text for _, text, *_ in running] == [
        "0 of 2 done\na.jpg: Queued — 1st in the gpu queue",
        "1 of 2 done · 1 running\nb.jpg: Applying style",
    ]
    assert [caption for _, caption in running[1][0]] == ["a.jpg"] and running[1][4] is None
    gallery, text, batch_id, total, archive = final
    assert (text, batch_id, total) == ("2 of 2 done", BATCH, 2)
    assert [Path(path).read_bytes() for path, _ in gallery] == [b"png of task-0", b"png of task-1"]
    assert Path(archive).name == "batch-style_transfer-11111111.zip" and zipfile.ZipFile(archive).namelist() == [
        "manifest.json"
    ]
    assert reported[0] == (None, "0 of 2 done") and reported[1] == (0.75, "1 of 2 done · 1 running")
    assert reported[-1] == (1.0, "2 of 2 done")


def test_a_batch_where_every_item_failed_still_offers_its_manifest(fake: FakeClient) -> None:
    fake.statuses = [batch(item(0, JobState.FAILURE, "a.jpg", "Model missing"), item(1, JobState.REVOKED, "b.jpg"))]

    async def updates() -> list[Any]:
        return [update async for update in follow_batch(BATCH, 2, lambda *a, **k: None, lambda path: path)]  # type: ignore[arg-type]

    (gallery, text, _, _, archive), *_ = run_async(updates())
    assert gallery == [] and "Failed: a.jpg: Model missing" in text
    assert zipfile.ZipFile(archive).namelist() == ["manifest.json"]
    fake.statuses = [batch(item(0, JobState.REVOKED, "a.jpg"), cancelled=True)]  # nothing ran: nothing to zip
    assert run_async(updates())[-1][4] is None


def test_the_section_waits_for_redis_and_says_when_the_batch_is_gone(fake: FakeClient) -> None:
    done = batch(item(0, JobState.SUCCESS, "a.jpg"))
    fake.statuses = [ServiceUnavailable("away"), done]

    async def updates() -> list[Any]:
        return [update async for update in follow_batch(BATCH, 1, lambda *a, **k: None, lambda path: path)]  # type: ignore[arg-type]

    first, final = run_async(updates())
    assert first[1] == "Waiting for Redis to come back…" and final[1] == "1 of 1 done"
    fake.statuses = [BatchNotFound(BATCH)]
    with pytest.raises(gr.Error, match=f"Batch not found: {BATCH} is unknown or expired"):
        run_async(updates())


def test_a_submission_counts_once_and_bad_items_are_named(fake: FakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui.batch, "admit", lambda client: client.admit())  # as a page's request is counted
    answer = start(BatchRequest({"task_type": "style_transfer"}, [{"name": "a.jpg", "image": b"a"}] * 3))
    assert answer["total"] == 3 and fake.admitted == 1
    with pytest.raises(gr.Error, match=r"item 1 \(items\[0\]\.image\): image is required"):
        start(BatchRequest({"task_type": "style_transfer"}, [{"name": None}]))


@pytest.mark.parametrize("endpoint", [ui.batch_api.batch_status, ui.batch_api.cancel_batch, ui.batch_api.batch_result])
def test_redis_away_is_said_plainly(endpoint: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = JobClient(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))  # nothing listens there
    for module in (ui.batch, ui.common, ui.batch_api):
        monkeypatch.setattr(module, "get_client", lambda: nowhere)
    with pytest.raises(gr.Error) as caught:
        endpoint(BATCH)
    assert caught.value.message == UNREACHABLE


def test_an_empty_batch_id_is_asked_for() -> None:
    with pytest.raises(gr.Error, match="Enter a batch id"):
        ui.batch_api.batch_status("  ")


def test_a_batch_belongs_to_whoever_the_page_event_comes_from(
    fake: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With access control on, the job client owns and checks a batch by its caller: the page and the
    Gradio API pass the event's, so a batch submitted here is the same user's over REST."""
    monkeypatch.setattr(ui.common, "_requester", lambda: ("alice", {}, "10.0.0.7"))
    fake.statuses = [batch(item(0, JobState.SUCCESS, "a.jpg"))]
    start(BatchRequest({"task_type": "style_transfer"}, [{"name": "a.jpg", "image": b"a"}]))
    ui.batch_api.batch_status(BATCH)
    ui.batch_api.batch_result(BATCH)
    ui.batch_api.cancel_batch(BATCH)
    assert fake.admitted == 1 and set(fake.callers) == {"caller alice@10.0.0.7"} and len(fake.callers) == 4
