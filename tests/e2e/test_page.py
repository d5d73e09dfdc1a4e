"""The page in a real Chromium: it loads, shows the workers, and picks up a job by its id."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.sync_api import expect

from tests.conftest import b64


def test_page_shows_live_workers_per_queue(page: Any, live_server: str) -> None:
    page.goto(live_server)
    expect(page.get_by_text("Atelier").first).to_be_visible()
    expect(page.get_by_text("gpu: 1 worker")).to_be_visible(timeout=15_000)
    expect(page.get_by_text("cpu: 1 worker")).to_be_visible()


def test_a_job_submitted_over_rest_is_found_on_the_page(page: Any, live_server: str, photo: Any, mask: Any) -> None:
    response = httpx.post(
        f"{live_server}/api/v1/tasks/submit/",
        json={"task_type": "object_removal", "image": b64(photo), "mask": b64(mask)},
    )
    task_id = response.json()["task_id"]
    page.goto(live_server)
    page.get_by_label("Task id").fill(task_id)
    page.get_by_role("button", name="Look up").click()
    expect(page.get_by_text('"SUCCESS"').or_(page.get_by_text("PROCESSING")).first).to_be_visible(timeout=15_000)
    page.get_by_role("button", name="Look up").click()  # again, once it has surely finished
    expect(page.get_by_text('"SUCCESS"').first).to_be_visible(timeout=15_000)
    expect(page.locator("img[src*='/gradio_api/file='], img[src^='data:image']").first).to_be_visible(timeout=15_000)


def test_an_unknown_id_is_reported_plainly(page: Any, live_server: str) -> None:
    page.goto(live_server)
    page.get_by_label("Task id").fill("00000000-0000-4000-8000-000000000000")
    page.get_by_role("button", name="Look up").click()
    expect(page.get_by_text("Task not found").first).to_be_visible(timeout=15_000)
