"""Batches on the page, in a real Chromium: many files in one tab, the gallery filling, "N of N done",
Cancel for the whole batch, the zip, and the Tasks tab listing and looking up batches."""

from __future__ import annotations

import io
import json
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from playwright.sync_api import Locator, Page, expect

from tests.e2e.helpers import EXAMPLES, NEXT_FRAMES, fill_field, occupy_cpu, open_tab, record, seen

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
# The batch section's progress strip (ui/batch.py), for ``record``.
BATCH_BARS = ".batch-progress .progress-text, .batch-progress .eta-bar, .batch-progress .meta-text"


def open_batch(tab: Locator) -> Locator:
    """Open the tab's batch section; the section."""
    tab.get_by_text("Batch — many images at once").click()
    section = tab.locator("[id^=batch-]").first
    expect(section.get_by_role("button", name="Run batch")).to_be_visible()
    tab.page.evaluate(NEXT_FRAMES)  # its fields mount on opening: see open_tab
    return section


def choose(section: Locator, files: list[Path]) -> None:
    section.locator(".batch-files input[type=file]").set_input_files([str(path) for path in files])
    expect(section.locator(".batch-files").get_by_role("button", name="Remove this file")).to_have_count(len(files))


def status_box(section: Locator) -> Locator:
    return section.locator(".batch-status textarea, .batch-status input").first


def batch_id_of(section: Locator) -> str:
    return section.locator(".batch-id textarea, .batch-id input").first.input_value()


def named_copies(tmp_path: Path, source: Path, names: list[str]) -> list[Path]:
    copies = []
    for name in names:
        copies.append(tmp_path / name)
        shutil.copy(source, copies[-1])
    return copies


def download_zip(page: Page, section: Locator) -> zipfile.ZipFile:
    link = section.locator(".batch-zip a").first
    expect(link).to_be_visible(timeout=15_000)
    with page.expect_download() as download:
        link.click()
    return zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))


def test_a_style_transfer_batch_fills_the_gallery_and_zips_the_results(
    page: Page, live_server: str, tmp_path: Path
) -> None:
    photos = [EXAMPLES / "coffee.jpg", EXAMPLES / "chelsea.jpg", EXAMPLES / "rocket.jpg"]
    page.goto(live_server)
    tab = open_tab(page, "Style transfer", "style_transfer")
    page.locator("#style-gallery").get_by_text("Starry night").click()
    section = open_batch(tab)
    choose(section, photos)
    record(page, ".batch-status", BATCH_BARS)
    section.get_by_role("button", name="Run batch").click()
    expect(status_box(section)).to_have_value(re.compile(r"^3 of 3 done"), timeout=60_000)
    expect(section.locator(".batch-gallery img")).to_have_count(3)
    batch_id = batch_id_of(section)
    assert UUID.match(batch_id)
    shown = seen(page)
    assert shown["statuses"][0] == "Submitted 3 items", shown
    assert shown["progress"], shown  # the progress bar showed on the status line
    status = httpx.get(f"{live_server}/api/v1/batches/{batch_id}/").json()
    assert status["status"] == "SUCCESS" and status["task_type"] == "style_transfer"
    assert [item["name"] for item in status["items"]] == ["coffee.jpg", "chelsea.jpg", "rocket.jpg"]
    archive = download_zip(page, section)
    assert sorted(archive.namelist()) == ["chelsea.png", "coffee.png", "manifest.json", "rocket.png"]
    assert Image.open(io.BytesIO(archive.read("rocket.png"))).size == (640, 427)
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["batch_id"] == batch_id and {item["status"] for item in manifest["items"]} == {"SUCCESS"}
    # The Tasks tab lists the batch and looks it up by its id.
    tasks = open_tab(page, "Tasks", "tasks")
    table = tasks.locator("#recent-jobs table").first
    expect(table).to_contain_text(batch_id, timeout=10_000)
    expect(table).to_contain_text("Style transfer · batch of 3 items")
    fill_field(tasks.locator("#lookup-id textarea, #lookup-id input").first, batch_id)
    tasks.get_by_role("button", name="Status").click()
    expect(tasks.get_by_text("3 of 3 done").first).to_be_visible(timeout=10_000)
    tasks.get_by_role("button", name="Result").click()
    expect(tasks.locator("#lookup-zip a").first).to_be_visible(timeout=10_000)


def upload_mask(page: Page, tab: Locator) -> None:
    page.locator("#object-mask input[type=file]").set_input_files(str(EXAMPLES / "coffee_mask.png"))
    expect(page.locator("#object-mask img").first).to_be_visible(timeout=10_000)


def test_one_mask_for_a_batch_of_photos_and_cancel_stops_the_whole_batch(
    page: Page, live_server: str, photo: Any, tmp_path: Path
) -> None:
    cups = named_copies(tmp_path, EXAMPLES / "coffee.jpg", [f"cup-{index}.jpg" for index in range(4)])
    page.goto(live_server)
    tab = open_tab(page, "Remove object", "object_removal")
    upload_mask(page, tab)
    section = open_batch(tab)
    choose(section, cups)
    blocker = occupy_cpu(live_server, photo)  # the items wait behind it, so Cancel finds them queued
    try:
        section.get_by_role("button", name="Run batch").click()
        expect(status_box(section)).to_have_value(re.compile(r"^0 of 4 done\ncup-0.jpg: Queued"))
        batch_id = batch_id_of(section)
        section.get_by_role("button", name="Cancel batch").click()
        expect(status_box(section)).to_have_value(re.compile(r"^Cancelled · 0 of 4 done · 4 cancelled"))
        status = httpx.get(f"{live_server}/api/v1/batches/{batch_id}/").json()
        assert status["status"] == "REVOKED" and status["counts"]["REVOKED"] == 4
        expect(section.locator(".batch-zip a")).to_have_count(0)  # nothing finished: no zip
    finally:
        httpx.post(f"{live_server}/api/v1/tasks/{blocker}/cancel/")
    # The same mask and photos again, left to finish: every photo has the mask's area painted over.
    section.get_by_role("button", name="Run batch").click()
    expect(status_box(section)).to_have_value(re.compile(r"^4 of 4 done$"), timeout=60_000)
    assert batch_id_of(section) != batch_id
    expect(section.locator(".batch-gallery img")).to_have_count(4)
    archive = download_zip(page, section)
    assert sorted(archive.namelist()) == ["cup-0.png", "cup-1.png", "cup-2.png", "cup-3.png", "manifest.json"]
    original = np.asarray(Image.open(EXAMPLES / "coffee.jpg").convert("RGB"), dtype=int)
    masked = np.asarray(Image.open(EXAMPLES / "coffee_mask.png").convert("L")) > 127
    for name in ("cup-0.png", "cup-3.png"):
        result = np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGB"), dtype=int)
        changed = np.abs(result - original).sum(axis=2) > 30
        assert changed[masked].mean() > 0.25 and changed[~masked].mean() < 0.01, name  # only the mask's area


def test_a_bad_item_is_named_and_nothing_runs(page: Page, live_server: str, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    page.goto(live_server)
    tab = open_tab(page, "Remove object", "object_removal")
    section = open_batch(tab)
    section.get_by_role("button", name="Run batch").click()
    expect(status_box(section)).to_have_value(re.compile("^Not submitted: Choose the photos"))
    choose(section, [EXAMPLES / "coffee.jpg", EXAMPLES / "chelsea.jpg", notes])
    section.get_by_role("button", name="Run batch").click()
    expect(status_box(section)).to_have_value(re.compile("^Not submitted: A batch needs one mask"))
    upload_mask(page, tab)
    section.get_by_role("button", name="Run batch").click()
    expect(page.get_by_text("chelsea.jpg (items[1].mask): mask is 600×400 but image is 451×300").first).to_be_visible()
    expect(status_box(section)).to_have_value(re.compile(r"notes\.txt \(items\[2\]\.image\): image could not be"))
    assert batch_id_of(section) == ""


def test_generate_makes_a_batch_from_prompts_and_seeds(page: Page, live_server: str, engines: Path) -> None:
    page.goto(live_server)
    tab = open_tab(page, "Generate", "image_generation")
    fill_field(tab.get_by_label("Seed (-1 = random)"), "40")
    for side in ("Width", "Height"):  # small images: four of them on a CPU
        fill_field(tab.get_by_label(f"number input for {side}"), "128")
    fill_field(tab.get_by_label("number input for Images"), "2")  # a single job's grid: not for a batch's items
    section = open_batch(tab)
    fill_field(section.get_by_label("number input for Seeds per prompt", exact=False), "2")
    fill_field(section.get_by_label("Prompts, one per line (empty: the prompt above)"), "a red fox\na blue bird")
    page.wait_for_timeout(500)  # Gradio takes a changed field into its state on the next frame, not at once
    section.get_by_role("button", name="Run batch").click()
    expect(status_box(section)).to_have_value(re.compile(r"^4 of 4 done$"), timeout=120_000)
    expect(section.locator(".batch-gallery")).to_contain_text("a blue bird (seed 41)")
    archive = download_zip(page, section)
    assert sorted(archive.namelist()) == [
        "a-blue-bird-seed-40.png", "a-blue-bird-seed-41.png", "a-red-fox-seed-40.png", "a-red-fox-seed-41.png",
        "manifest.json",
    ]  # fmt: skip
    status = httpx.get(f"{live_server}/api/v1/batches/{batch_id_of(section)}/").json()
    assert status["task_type"] == "image_generation" and status["total"] == 4
    assert Image.open(io.BytesIO(archive.read("a-red-fox-seed-41.png"))).size == (128, 128)  # one image, no grid


def test_face_swap_puts_the_one_source_face_onto_every_target(
    page: Page, live_server: str, engines: Path, faces: tuple[Path, Path], tmp_path: Path
) -> None:
    source, target = faces
    targets = named_copies(tmp_path, target, ["group-a.png", "group-b.png"])
    page.goto(live_server)
    tab = open_tab(page, "Face swap", "face_swap")
    section = open_batch(tab)
    choose(section, targets)
    section.get_by_role("button", name="Run batch").click()
    expect(status_box(section)).to_have_value(re.compile("^Not submitted: Upload the source face first"))
    tab.locator("input[type=file]").first.set_input_files(str(source))
    expect(tab.locator("img").first).to_be_visible(timeout=10_000)
    section.get_by_role("button", name="Run batch").click()
    expect(status_box(section)).to_have_value(re.compile(r"^2 of 2 done$"), timeout=90_000)
    expect(section.locator(".batch-gallery img")).to_have_count(2)
    expect(section.locator(".batch-gallery")).to_contain_text("group-b.png")
    assert sorted(download_zip(page, section).namelist()) == ["group-a.png", "group-b.png", "manifest.json"]
