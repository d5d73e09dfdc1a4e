"""Results onward in a real Chromium: Send to ▸ another tab, follow-up steps (a chain) from a tab, and
the PNG Info tab that fills Generate."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from playwright.sync_api import Locator, Page, expect

from tests.e2e.helpers import EXAMPLES, check_field, open_tab, record, seen, task_id_of, upload, wait_for_result

A1111 = "a lighthouse at dusk, oil painting\nNegative prompt: blurry\nSteps: 6, Sampler: Euler, CFG scale: 1.5, "
A1111 += "Seed: 1234, Size: 256x192, Model: sd-turbo"


def status_box(tab: Locator) -> Locator:
    return tab.locator(".job-status textarea, .job-status input").first


def run_style_transfer(page: Page) -> None:
    tab = open_tab(page, "Style transfer", "style_transfer")
    upload(tab, EXAMPLES / "coffee.jpg")
    page.locator("#style-gallery").get_by_text("Starry night").click()
    tab.get_by_role("button", name="Run").click()
    wait_for_result(tab, timeout=60_000)


def test_send_a_result_to_remove_background_keeps_that_tabs_settings(page: Page, live_server: str) -> None:
    page.goto(live_server)
    background = open_tab(page, "Remove background", "background_removal")
    check_field(background.get_by_label("Alpha matting (finer hair and edges)"))  # a setting of the target tab
    run_style_transfer(page)
    page.locator("#send-style_transfer-to-background_removal").click()
    tab = page.locator("#tab-background_removal")
    expect(tab).to_be_visible()
    expect(page.get_by_role("tab", name="Remove background")).to_have_attribute("aria-selected", "true")
    expect(tab.locator("img").first).to_be_visible(timeout=15_000)  # the styled photo, loaded as the input
    expect(tab.get_by_label("Alpha matting (finer hair and edges)")).to_be_checked()
    # And on into the object editor, as its background.
    page.get_by_role("tab", name="Style transfer").click()
    page.locator("#send-style_transfer-to-object_removal").click()
    editor = page.locator("#tab-object_removal #object-editor")
    expect(editor).to_be_visible()
    expect(editor.get_by_text("Upload an image")).to_be_hidden(timeout=15_000)


def test_a_follow_up_step_makes_a_chain_followed_step_by_step(page: Page, live_server: str, engines: Path) -> None:
    page.goto(live_server)
    tab = open_tab(page, "Style transfer", "style_transfer")
    upload(tab, EXAMPLES / "coffee.jpg")
    tab.get_by_text("Then… (follow-up steps)").click()
    tab.get_by_label("Then, step 2").click()
    page.get_by_role("option", name="Remove the background").click()
    steps = tab.locator(".then-steps textarea, .then-steps input").first
    expect(steps).to_have_value(re.compile("background_removal"))
    assert json.loads(steps.input_value()) == [{"task_type": "background_removal"}]
    record(page)
    tab.get_by_role("button", name="Run").click()
    image = wait_for_result(tab, timeout=90_000)
    expect(status_box(tab)).to_have_value("Done", timeout=30_000)
    statuses = seen(page)["statuses"]
    assert any(re.match(r"Step [12] of 2 · ", message) for message in statuses), statuses
    status = httpx.get(f"{live_server}/api/v1/tasks/{task_id_of(tab)}/status/").json()
    assert status["status"] == "SUCCESS" and [s["task_type"] for s in status["steps"]] == [
        "style_transfer",
        "background_removal",
    ]
    assert image.get_attribute("src")  # the last step's result: the cut-out


def test_png_info_shows_an_a1111_png_and_fills_generate(page: Page, live_server: str, tmp_path: Path) -> None:
    chunks = PngInfo()
    chunks.add_text("parameters", A1111)
    path = tmp_path / "a1111.png"
    Image.new("RGB", (64, 48), (120, 90, 60)).save(path, pnginfo=chunks)
    page.goto(live_server)
    tab = open_tab(page, "PNG Info", "png_info")
    page.locator("#png-info-file input[type=file]").set_input_files(str(path))
    prompt = page.locator("#png-info-prompt textarea")
    expect(prompt).to_have_value("a lighthouse at dusk, oil painting", timeout=15_000)
    expect(page.locator("#png-info-summary")).to_contain_text("AUTOMATIC1111")
    expect(page.locator("#png-info-summary")).to_contain_text("Seed 1234")
    tab.get_by_role("button", name="Send to Generate").click()
    expect(page.get_by_role("tab", name="Generate")).to_have_attribute("aria-selected", "true")
    generate = page.locator("#tab-image_generation")
    expect(generate.get_by_label("Prompt", exact=True)).to_have_value("a lighthouse at dusk, oil painting")
    expect(generate.get_by_label("Negative prompt")).to_have_value("blurry")
    expect(generate.get_by_label("Seed (-1 = random)")).to_have_value("1234")
