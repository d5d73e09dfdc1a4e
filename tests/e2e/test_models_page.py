"""The Models tab and the marks on the tabs' choices, in a real Chromium against the session's workers
(their u2net and buffalo_l are the tiny models; their mirror is an address where nothing listens)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from tasks.models import request_key
from tests.e2e.helpers import open_tab


def test_the_models_tab_lists_each_model_and_downloads_for_a_queue(
    page: Page, live_server: str, engines: Path, redis_client: Any
) -> None:
    page.goto(live_server)
    page.wait_for_load_state("networkidle")
    page.get_by_role("tab", name="Models").click()
    table = page.locator("#models-table")
    u2net = table.locator("tr").filter(has=page.get_by_role("cell", name="u2net (default)", exact=True))
    expect(u2net).to_contain_text("ready on session-cpu@test", timeout=20_000)
    birefnet = table.locator("tr").filter(has=page.get_by_role("cell", name="birefnet-general", exact=True))
    expect(birefnet).to_contain_text("missing, 973 MB, MIT, downloads on first use")
    swapper = table.locator("tr").filter(has=page.get_by_role("cell", name="inswapper_128 (default)", exact=True))
    expect(swapper).to_contain_text("ready on session-gpu@test")

    # The cpu queue's defaults: u2net is there; big-lama is fetched from the (dead) mirror and fails, saying why.
    try:
        page.locator("#models-download").click()
        expect(page.locator("#models-message")).to_contain_text("Asked session-cpu@test to fetch u2net, big-lama")
        expect(page.locator("#models-progress")).to_contain_text(
            re.compile(
                r"session-cpu@test: failed: big-lama: Could not download big-lama\.pt from http://127\.0\.0\.1:9/"
            )
        )
    finally:
        redis_client.delete(request_key("cpu"))  # workers started later must not take it up

    tab = open_tab(page, "Remove object", "object_removal")
    tab.get_by_label("Engine").click()
    expect(page.get_by_role("option", name=re.compile(r"^lama — downloads on first use \(206 MB\)$"))).to_be_visible()
    expect(page.get_by_role("option", name="telea", exact=True)).to_be_visible()
