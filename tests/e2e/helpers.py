"""Driving the studio page like a person: tabs, uploads, the Run button, what the page shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page, expect

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"

# Records, every 20 ms, whether a progress bar is on screen and every status message shown,
# so that a fast job's progress is still caught.
RECORDER = """
() => {
  window.__seen = {progress: false, statuses: []};
  clearInterval(window.__recorder);
  window.__recorder = setInterval(() => {
    if (document.querySelector('.progress-text, .progress-level, .eta-bar, .meta-text')) window.__seen.progress = true;
    document.querySelectorAll('.job-status textarea, .job-status input').forEach((box) => {
      if (box.value && !window.__seen.statuses.includes(box.value)) window.__seen.statuses.push(box.value);
    });
  }, 20);
}
"""


def open_tab(page: Page, name: str, task_type: str) -> Locator:
    page.wait_for_load_state("networkidle")  # the app has mounted and run its load events
    page.get_by_role("tab", name=name).click()
    tab = page.locator(f"#tab-{task_type}")
    expect(tab).to_be_visible()
    return tab


def upload(tab: Locator, path: Path, index: int = 0) -> None:
    tab.locator("input[type=file]").nth(index).set_input_files(str(path))


def record(page: Page) -> None:
    page.evaluate(RECORDER)


def seen(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate("() => window.__seen")
    return result


def task_id_of(tab: Locator) -> str:
    return tab.locator(".task-id textarea, .task-id input").first.input_value()


def wait_for_result(tab: Locator, timeout: float = 30_000) -> Locator:
    image = tab.locator(".result img").first
    expect(image).to_be_visible(timeout=timeout)
    return image


def upload_to_editor(editor: Locator, path: Path) -> None:
    """Put a photo into the image editor the way a person does (its Upload button and the file
    chooser), checking that it took: the placeholder goes away."""
    page = editor.page
    placeholder = editor.get_by_text("Upload an image")
    expect(placeholder).to_be_visible(timeout=15_000)
    for _ in range(4):
        try:
            with page.expect_file_chooser(timeout=5_000) as chooser:
                editor.get_by_role("button", name="Upload", exact=True).first.click()
            chooser.value.set_files(str(path))
        except Exception:  # no chooser opened: hand the file to the input directly
            editor.locator("input[type=file]").first.set_input_files(str(path))
        try:
            expect(placeholder).to_be_hidden(timeout=8_000)
            return
        except AssertionError:
            page.wait_for_timeout(500)
    expect(placeholder).to_be_hidden(timeout=1_000)
