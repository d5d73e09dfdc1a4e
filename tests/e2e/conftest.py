"""A page per test in the session's Chromium (the live server and the browser are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.support.operations import register

register()  # so tests can occupy a worker with a long test_steps job

# Playwright's 5 s default is short for a busy 2-core CI machine that also runs Redis, workers
# and the server: assertions that name no timeout get 15 s.
expect.set_options(timeout=15_000)


@pytest.fixture
def page(browser: Any, artifacts: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    (artifacts / f"{request.node.name}.console.txt").write_text("\n".join(errors))
    page.screenshot(path=str(artifacts / f"{request.node.name}.png"), full_page=True)
    context.close()
