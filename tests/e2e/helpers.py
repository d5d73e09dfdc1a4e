"""Driving the studio page like a person: tabs, uploads, the Run button, what the page shows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Locator, Page, expect

from tests.conftest import b64
from tests.support.stack import wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"

# Records whether a progress bar (``bars``) was ever on screen and every value the status line
# (``status``: a job's or a batch's) took, as the page writes them (a value setter and a DOM
# observer), so that a fast job's short states are caught. Read with ``seen``.
RECORDER = """
({status, bars}) => {
  window.__seen = {progress: false, statuses: []};
  window.__recording = status;
  const note = (value) => {
    if (value && !window.__seen.statuses.includes(value)) window.__seen.statuses.push(value);
  };
  for (const proto of [HTMLInputElement.prototype, HTMLTextAreaElement.prototype]) {
    const own = Object.getOwnPropertyDescriptor(proto, 'value');
    if (own.set.recording) continue;
    const set = function (value) {
      if (this.closest && this.closest(window.__recording)) note(String(value));
      own.set.call(this, value);
    };
    set.recording = true;
    Object.defineProperty(proto, 'value', {...own, set});
  }
  const look = () => {
    if (document.querySelector(bars)) window.__seen.progress = true;
    document.querySelectorAll(`${status} textarea, ${status} input`).forEach((box) => note(box.value));
  };
  if (window.__observer) window.__observer.disconnect();
  window.__observer = new MutationObserver(look);
  window.__observer.observe(document.body, {childList: true, subtree: true, characterData: true, attributes: true});
  look();
}
"""
JOB_BARS = ".progress-text, .progress-level, .eta-bar, .meta-text"
# A tab's inputs mount when it is first opened, and Gradio pushes its stored values into them a
# frame later: typing before that frame is wiped. Two frames and a task later, it has passed.
NEXT_FRAMES = "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(done))))"


def open_tab(page: Page, name: str, task_type: str) -> Locator:
    page.wait_for_load_state("networkidle")  # the app has mounted and run its load events
    page.get_by_role("tab", name=name).click()
    tab = page.locator(f"#tab-{task_type}")
    expect(tab).to_be_visible()
    expect(tab.locator("input, textarea, button").first).to_be_attached()
    page.evaluate(NEXT_FRAMES)
    return tab


def fill_field(field: Locator, value: str) -> None:
    """Type ``value`` and leave the field, as a person does; typed again when Gradio's first push of
    the stored values (a frame after the field mounts, later on a loaded machine) wiped it."""

    def held() -> None:
        expect(field).to_have_value(value, timeout=3_000)
        field.page.evaluate(NEXT_FRAMES)
        expect(field).to_have_value(value, timeout=1_000)

    until_it_holds(lambda: (field.fill(value), field.press("Tab")), held)


def check_field(box: Locator) -> None:
    """Tick a checkbox and see it stay ticked (see ``fill_field``)."""

    def held() -> None:
        box.page.evaluate(NEXT_FRAMES)
        expect(box).to_be_checked(timeout=1_000)

    until_it_holds(box.check, held)


def until_it_holds(act: Callable[[], object], held: Callable[[], None], attempts: int = 3) -> None:
    """``act``, then ``held`` (expectations); ``act`` again while they fail, ``attempts`` times in all."""
    for attempt in range(attempts):
        act()
        try:
            held()
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise


def upload(tab: Locator, path: Path, index: int = 0) -> None:
    tab.locator("input[type=file]").nth(index).set_input_files(str(path))


def record(page: Page, status: str = ".job-status", bars: str = JOB_BARS) -> None:
    page.evaluate(RECORDER, {"status": status, "bars": bars})


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


def occupy_cpu(live_server: str, photo: Any) -> str:
    """Keep the cpu worker busy (a 2-minute job: always cancelled, never waited out); its task id."""
    body = {"task_type": "test_steps", "image": b64(photo.resize((8, 8))), "parameters": {"steps": 2400, "delay": 0.05}}
    task_id: str = httpx.post(f"{live_server}/api/v1/tasks/submit/", json=body).json()["task_id"]
    status = f"{live_server}/api/v1/tasks/{task_id}/status/"
    wait_until(lambda: httpx.get(status).json()["status"] == "PROCESSING", 30, what="the cpu worker to be busy")
    return task_id


def stable_box(locator: Locator, timeout: float = 10.0) -> dict[str, float]:
    """The element's bounding box once it stops moving (a canvas still laying out loses strokes)."""
    previous = None

    def settled() -> dict[str, float] | None:
        nonlocal previous
        box = locator.bounding_box()
        same = box is not None and box == previous and box["width"] > 0
        previous = box
        return box if same else None

    result: dict[str, float] = wait_until(settled, timeout, interval=0.2, what="the element to settle")
    return result
