"""Every tab in a real Chromium: upload, run, progress, result, cancel, errors."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from playwright.sync_api import Page, expect

from pipelines.object_removal import FALLBACK_NOTE
from tests.e2e.helpers import (
    EXAMPLES,
    fill_field,
    occupy_cpu,
    open_tab,
    record,
    seen,
    stable_box,
    task_id_of,
    upload,
    upload_to_editor,
    wait_for_result,
)
from ui.app import TABS

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def fetch(live_server: str, src: str) -> Image.Image:
    url = src if src.startswith("http") else f"{live_server}{src}"
    return Image.open(io.BytesIO(httpx.get(url).content))


def test_style_transfer_tab_end_to_end(page: Page, live_server: str) -> None:
    page.goto(live_server)
    tab = open_tab(page, "Style transfer", "style_transfer")
    upload(tab, EXAMPLES / "coffee.jpg")
    page.locator("#style-gallery").get_by_text("Starry night").click()
    record(page)
    tab.get_by_role("button", name="Run").click()
    image = wait_for_result(tab)
    assert UUID.match(task_id_of(tab))
    expect(tab.locator(".job-status textarea, .job-status input").first).to_have_value("Done")
    observed = seen(page)
    assert observed["progress"], observed
    assert "Submitted" in observed["statuses"] or any("style" in s.lower() for s in observed["statuses"]), observed
    styled = fetch(live_server, image.get_attribute("src") or "")
    assert styled.size == (600, 400)
    status = httpx.get(f"{live_server}/api/v1/tasks/{task_id_of(tab)}/status/").json()
    assert status["status"] == "SUCCESS" and status["task_type"] == "style_transfer"
    # Downloadable: the result carries a download button.
    expect(
        tab.locator(".result")
        .get_by_role("button", name=re.compile("download", re.I))
        .or_(tab.locator(".result a[download]"))
        .first
    ).to_be_visible()


def test_remove_object_by_painting_a_mask(page: Page, live_server: str) -> None:
    page.goto(live_server)
    tab = open_tab(page, "Remove object", "object_removal")
    editor = tab.locator("#object-editor")
    upload_to_editor(editor, EXAMPLES / "coffee.jpg")
    expect(editor.get_by_role("button", name="Brush Size")).to_be_visible(timeout=15_000)  # the brush is active
    box = stable_box(editor.locator("canvas").first)
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 30, cy)
    page.mouse.down()
    for step in range(1, 16):
        page.mouse.move(cx - 30 + step * 4, cy + (step % 3) * 3, steps=3)
    page.mouse.up()
    record(page)
    tab.get_by_role("button", name="Run").click()
    image = wait_for_result(tab)
    task_id = task_id_of(tab)
    result = httpx.get(f"{live_server}/api/v1/tasks/{task_id}/result/").json()["result"]
    assert result["metadata"]["engine"] == "telea"
    assert result["metadata"]["masked_pixels"] > 100  # the brush stroke became the mask
    out = np.asarray(fetch(live_server, image.get_attribute("src") or "").convert("RGB"), dtype=int)
    original = np.asarray(Image.open(EXAMPLES / "coffee.jpg").convert("RGB"), dtype=int)
    assert out.shape == original.shape
    assert (np.abs(out - original).sum(axis=2) > 30).sum() > 50  # something was painted over
    # "auto" without LaMa's weights: the status and the metadata say the basic engine ran instead.
    status = tab.locator(".job-status textarea, .job-status input").first
    expect(status).to_have_value(FALLBACK_NOTE)
    assert result["metadata"]["fallback"]["instead_of"] == "lama"
    assert (image.get_attribute("src") or "").endswith("/object-removed.png")  # the editor sends no file name
    # LaMa chosen without its weights: a short pop-up below the header, the paths and commands under Status.
    tab.get_by_label("Engine").click()
    page.get_by_role("option", name=re.compile(r"^lama")).click()
    tab.get_by_role("button", name="Run").click()
    expect(status).to_have_value(re.compile(r"^Failed: "), timeout=30_000)
    toast = page.locator(".toast-body").filter(has_text="the details are under Status").first
    expect(toast).to_contain_text("The LaMa engine needs its weights")
    expect(toast).not_to_contain_text("/tmp/")
    header, popup = page.locator("#atelier-header").bounding_box(), toast.bounding_box()
    assert header and popup and popup["y"] > header["y"] + header["height"], (header, popup)
    tab.locator(".status-detail summary").click()
    expect(tab.locator(".status-detail pre")).to_contain_text("download-models")


def test_queued_job_shows_its_place_and_cancel_stops_it(page: Page, live_server: str, photo: Any) -> None:
    blocker = occupy_cpu(live_server, photo)
    try:
        page.goto(live_server)
        tab = open_tab(page, "Remove object", "object_removal")
        upload_to_editor(tab.locator("#object-editor"), EXAMPLES / "coffee.jpg")
        page.locator("#object-mask input[type=file]").set_input_files(str(EXAMPLES / "coffee_mask.png"))
        expect(page.locator("#object-mask img").first).to_be_visible(timeout=10_000)
        tab.get_by_role("button", name="Run").click()
        status_box = tab.locator(".job-status textarea, .job-status input").first
        expect(status_box).to_have_value(re.compile(r"Queued — 1st in the cpu queue"), timeout=15_000)
        # A progress bar while queued (not only a spinner), its text the place in the queue.
        bar = tab.locator(".result .progress-level").first
        expect(bar).to_be_visible()
        expect(tab.locator(".result")).to_contain_text("Queued — 1st in the cpu queue")
        task_id = task_id_of(tab)
        tab.get_by_role("button", name="Cancel").click()
        expect(status_box).to_have_value("Cancelled", timeout=10_000)
        assert httpx.get(f"{live_server}/api/v1/tasks/{task_id}/status/").json()["status"] == "REVOKED"
    finally:
        httpx.post(f"{live_server}/api/v1/tasks/{blocker}/cancel/")


def test_a_validation_error_is_shown_readably(page: Page, live_server: str) -> None:
    page.goto(live_server)
    tab = open_tab(page, "Generate", "image_generation")
    tab.get_by_role("button", name="Run").click()
    expect(page.get_by_text("Prompt is required", exact=True).first).to_be_visible(timeout=10_000)  # the tab's words


def test_generate_tab_shows_the_image_and_a_failure_says_why(
    page: Page, live_server: str, engines: Path, faces: tuple[Path, Path], tmp_path: Path
) -> None:
    page.goto(live_server)
    tab = open_tab(page, "Generate", "image_generation")
    fill_field(tab.get_by_label("Prompt", exact=True), "a lighthouse at dusk")
    tab.get_by_role("button", name="Run").click()
    status = tab.locator(".job-status textarea, .job-status input").first
    expect(status).to_have_value("Done", timeout=120_000)  # the first job loads the engine; step previews show first
    result = wait_for_result(tab).get_attribute("src") or ""
    assert fetch(live_server, result).size == (512, 512)
    assert UUID.match(task_id_of(tab))
    # A job that fails tells the user why, in a pop-up and in the status line that stays.
    tab = open_tab(page, "Face swap", "face_swap")
    no_face = tmp_path / "sky.png"
    Image.new("RGB", (320, 240), (70, 130, 200)).save(no_face)
    upload(tab, no_face, 0)
    upload(tab, faces[1], 1)
    tab.get_by_role("button", name="Run").click()
    expect(page.get_by_text("No face found in the source image").first).to_be_visible(timeout=30_000)
    status = tab.locator(".job-status textarea, .job-status input").first
    expect(status).to_have_value(re.compile(r"^Failed: No face found in the source image"))


def test_face_swap_and_background_tabs_run_and_report(
    page: Page, live_server: str, engines: Path, faces: tuple[Path, Path]
) -> None:
    page.goto(live_server)
    tab = open_tab(page, "Face swap", "face_swap")
    upload(tab, faces[0], 0)
    upload(tab, faces[1], 1)
    tab.get_by_role("button", name="Run").click()
    assert fetch(live_server, wait_for_result(tab).get_attribute("src") or "").size == (640, 480)
    tab = open_tab(page, "Remove background", "background_removal")
    upload(tab, EXAMPLES / "chelsea.jpg")
    tab.get_by_role("button", name="Run").click()
    cutout = fetch(live_server, wait_for_result(tab).get_attribute("src") or "")
    assert cutout.mode == "RGBA" and cutout.getextrema()[3][0] == 0  # transparent where the background was


def test_tasks_tab_picks_a_job_up_by_id_and_lists_recent_jobs(page: Page, live_server: str) -> None:
    page.goto(live_server)
    tab = open_tab(page, "Style transfer", "style_transfer")
    upload(tab, EXAMPLES / "chelsea.jpg")
    tab.get_by_role("button", name="Run").click()
    wait_for_result(tab)
    task_id = task_id_of(tab)
    tasks = open_tab(page, "Tasks", "tasks")
    expect(tasks.locator("#recent-jobs table").first).to_contain_text(task_id, timeout=10_000)  # noted, and so stored
    expect(tasks.locator("#history-table")).to_contain_text(task_id, timeout=10_000)  # the list, fresh as the tab opens
    page.reload()  # a reload keeps the recent jobs (browser storage), and the id still works
    tasks = open_tab(page, "Tasks", "tasks")
    expect(tasks.locator("#recent-jobs table").first).to_contain_text(task_id, timeout=10_000)
    mine = tasks.locator("#history-table").get_by_role("row").filter(has_text=task_id)
    expect(mine).to_contain_text("Done")  # the jobs' table: status in words, the title, a thumbnail
    expect(mine).to_contain_text("Style transfer")
    expect(mine.locator("img")).to_be_visible()
    lookup = tasks.locator("#lookup-id textarea, #lookup-id input").first
    fill_field(lookup, task_id)
    tasks.get_by_role("button", name="Status").click()
    summary = tasks.locator("#lookup-status")
    expect(summary).to_contain_text("Style transfer", timeout=10_000)  # in words: no JSON, no internal names
    expect(summary).to_contain_text("Done")
    tasks.get_by_role("button", name="Result").click()
    expect(tasks.locator("#lookup-result img").first).to_be_visible(timeout=10_000)
    tasks.get_by_role("button", name="Cancel").click()
    expect(page.get_by_text(re.compile("already finished")).first).to_be_visible(timeout=10_000)


def test_header_shows_workers_and_a_banner_for_an_unserved_queue(page: Page, live_server: str) -> None:
    page.goto(live_server)
    header = page.locator("#atelier-header")
    from pipelines.inventory import device
    from settings import get_settings

    gpu = "gpu queue" if device(get_settings()) == "cuda" else "gpu queue (on CPU)"  # named by what it runs on
    expect(header).to_contain_text(f"{gpu}: 1 worker")
    expect(header).to_contain_text("cpu queue: 1 worker")
    expect(header).not_to_contain_text("No GPU worker")


def test_dark_mode_renders(page: Page, live_server: str, artifacts: Any) -> None:
    page.goto(f"{live_server}/?__theme=dark")
    expect(page.get_by_role("tab", name="Style transfer")).to_be_visible()
    background = page.evaluate(
        "() => getComputedStyle(document.querySelector('gradio-app') || document.body).backgroundColor"
    )
    channels = [int(value) for value in re.findall(r"\d+", background)[:3]]
    assert sum(channels) < 200, background


def test_phone_layout_keeps_the_tabs_reachable(browser: Any, live_server: str, artifacts: Any) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.goto(live_server)
    expect(page.get_by_role("tab", name="Generate")).to_be_visible(timeout=15_000)
    page.wait_for_load_state("networkidle")
    expect(page.get_by_role("button", name="More tabs")).to_be_hidden()  # nothing behind "⋯"
    for name, panel in [
        *((title, task_type) for title, task_type, _ in TABS),
        ("PNG Info", "png_info"),
        ("Tasks", "tasks"),
    ]:
        page.get_by_role("tab", name=name, exact=True).click()  # every tab one tap away
        expect(page.locator(f"#tab-{panel}")).to_be_visible()
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, width  # nothing wider than the phone (the examples' table included)
    page.screenshot(path=str(artifacts / "phone.png"), full_page=True)
    context.close()


def test_an_unknown_id_is_reported_plainly(page: Page, live_server: str) -> None:
    page.goto(live_server)
    tasks = open_tab(page, "Tasks", "tasks")
    fill_field(tasks.locator("#lookup-id textarea, #lookup-id input").first, '<b id="injected">bold</b>')
    tasks.get_by_role("button", name="Status").click()
    expect(page.get_by_text(re.compile("Task not found")).first).to_be_visible(timeout=10_000)
    expect(page.get_by_text('<b id="injected">bold</b>', exact=False).first).to_be_visible()  # shown as text
    assert page.locator("#injected").count() == 0  # never rendered as HTML


def test_uploads_are_checked_and_converted_in_the_tabs_words(page: Page, live_server: str, tmp_path: Path) -> None:
    """A text file renamed .jpg is refused at once, in the field's label, never Gradio's internal error or
    a server path; a BMP is converted and runs; the Status box says what happened each time."""
    renamed = tmp_path / "notes.jpg"
    renamed.write_text("not a picture")
    bmp = tmp_path / "cup.bmp"
    Image.open(EXAMPLES / "chelsea.jpg").save(bmp)
    page.goto(live_server)
    tab = open_tab(page, "Face swap", "face_swap")
    status = tab.locator(".job-status textarea, .job-status input").first
    upload(tab, renamed, 0)
    refusal = "Source face could not be decoded as an image (use PNG, JPEG or WebP)"
    expect(status).to_have_value(f"Not used: {refusal}")
    expect(page.get_by_text(refusal).first).to_be_visible()  # the pop-up
    tab = open_tab(page, "Style transfer", "style_transfer")
    upload(tab, bmp)
    status = tab.locator(".job-status textarea, .job-status input").first
    expect(status).to_have_value("Photo: BMP, it converted to PNG (451×300)")
    tab.get_by_role("button", name="Run").click()
    expect(status).to_have_value("Done", timeout=30_000)
    result = wait_for_result(tab).get_attribute("src") or ""
    assert result.endswith("/cup-style-mosaic.png") and fetch(live_server, result).size == (451, 300)
    tab = open_tab(page, "Remove object", "object_removal")
    tab.get_by_role("button", name="Run").click()  # nothing uploaded: the page's words, no API talk
    status = tab.locator(".job-status textarea, .job-status input").first
    expect(status).to_have_value("Not submitted: Upload a photo first.")
    body = page.locator("body").inner_text()
    assert "Could not preprocess" not in body and "/tmp/" not in body and "handle_file" not in body


def test_the_remove_object_example_shows_the_spoon_s_mask_and_removes_it(page: Page, live_server: str) -> None:
    page.goto(live_server)
    tab = open_tab(page, "Remove object", "object_removal")
    tab.locator("#object-examples table tbody tr td, #object-examples .gallery-item").first.click()
    expect(page.locator("#object-mask img").first).to_be_visible()  # the mask in sight, not folded away
    expect(tab.locator("#object-editor canvas").first).to_be_visible()
    tab.get_by_role("button", name="Run").click()
    image = wait_for_result(tab)
    result = httpx.get(f"{live_server}/api/v1/tasks/{task_id_of(tab)}/result/").json()["result"]
    spoon = np.asarray(Image.open(EXAMPLES / "coffee_mask.png")) > 127
    assert result["metadata"]["masked_pixels"] == spoon.sum()
    out = np.asarray(fetch(live_server, image.get_attribute("src") or "").convert("RGB"), dtype=int)
    original = np.asarray(Image.open(EXAMPLES / "coffee.jpg").convert("RGB"), dtype=int)
    assert (np.abs(out - original).sum(axis=2) > 30)[spoon].mean() > 0.3  # the spoon is painted over
