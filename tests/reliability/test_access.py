"""Access: optional authentication covers the page, the Gradio API and REST alike; ids are
unguessable; a password in REDIS_URL works end to end."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from jobs import JobClient
from settings import Settings
from tests.integration.conftest import Api
from tests.integration.test_jobs import steps_job
from tests.support.stack import RedisServer, Worker, serving

USER, PASSWORD, TOKEN = "ana", "correct-horse-battery", "tok-" + "7" * 28


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def secured(redis_url: str, workers: Any) -> Iterator[str]:
    """The page + REST, as app.py serves them, with ATELIER_AUTH and an API token."""
    from app import build_app

    with serving(build_app(Settings(redis_url=redis_url, auth=f"{USER}:{PASSWORD}", api_tokens=TOKEN))) as url:
        yield url


def test_rest_needs_credentials_but_health_does_not(secured: str) -> None:
    submit = f"{secured}/api/v1/tasks/submit/"
    anonymous = httpx.post(submit, json=steps_job(steps=1, delay=0))
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Basic")
    assert httpx.post(submit, json=steps_job(), headers=basic(USER, "wrong-password")).status_code == 401
    assert httpx.post(submit, json=steps_job(), headers={"Authorization": "Bearer not-the-token"}).status_code == 401
    assert httpx.post(submit, json=steps_job(steps=1, delay=0), headers=basic(USER, PASSWORD)).status_code == 202
    by_token = httpx.post(submit, json=steps_job(steps=1, delay=0), headers={"Authorization": f"Bearer {TOKEN}"})
    assert by_token.status_code == 202
    task_id = by_token.json()["task_id"]
    assert httpx.get(f"{secured}/api/v1/tasks/{task_id}/status/").status_code == 401
    assert httpx.get(f"{secured}/openapi.json").status_code == 401
    assert httpx.get(f"{secured}/healthz").status_code == 200


def test_the_page_and_the_gradio_api_need_credentials_too(secured: str) -> None:
    from gradio_client import Client

    assert httpx.get(secured).status_code == 401
    assert httpx.get(f"{secured}/gradio_api/info").status_code == 401
    client = Client(secured, headers={"Authorization": f"Bearer {TOKEN}"}, verbose=False)
    task_id = client.predict("a fox", "", 512, 512, 4, 0, -1, 1, api_name="/submit_image_generation")
    assert re.fullmatch(r"[0-9a-f-]{36}", task_id)
    assert client.predict(task_id, api_name="/task_status")["task_id"] == task_id


def test_a_browser_logs_in_and_runs_a_job(secured: str, browser: Any, artifacts: Path) -> None:
    from playwright.sync_api import expect

    from tests.e2e.helpers import EXAMPLES, open_tab, upload, wait_for_result

    context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
    try:
        page = context.new_page()
        page.goto(secured)
        tab = open_tab(page, "Style transfer", "style_transfer")
        upload(tab, EXAMPLES / "chelsea.jpg")
        tab.get_by_role("button", name="Run").click()
        wait_for_result(tab)
        expect(tab.locator(".job-status textarea, .job-status input").first).to_have_value("Done")
        page.screenshot(path=str(artifacts / "logged-in.png"))
    finally:
        context.close()


@pytest.mark.parametrize(
    ("auth", "tokens", "words"),
    [("ana:changeme", None, "real password"), ("ana:short", None, "real password"), (None, "abc", r"16\+ characters")],
)
def test_placeholder_secrets_are_refused_at_start(auth: str | None, tokens: str | None, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Settings(auth=auth, api_tokens=tokens)


def test_task_ids_are_random_uuid4(api: Api) -> None:
    ids = [api.submit(steps_job(steps=1, delay=0)) for _ in range(5)]
    assert all(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", i) for i in ids)
    assert len(set(ids)) == 5


def test_a_password_in_redis_url_works_end_to_end(tmp_path: Path, artifacts: Path) -> None:
    from api import create_api

    server = RedisServer(tmp_path / "redis", password="s3cret-redis-password")
    worker = Worker("cpu", "password", env={"REDIS_URL": server.url}, log=artifacts / "worker-password.log")
    try:
        client = JobClient(Settings(redis_url=server.url))
        worker.wait_ready(client.store.redis)
        with TestClient(create_api(lambda: client, Settings(redis_url=server.url))) as http:
            api = Api(http)
            assert api.wait(api.submit(steps_job(steps=1, delay=0)))["status"] == "SUCCESS"
        unauthenticated = __import__("redis").Redis.from_url(server.url.replace(":s3cret-redis-password@", ""))
        with pytest.raises(Exception, match=r"(?i)auth"):
            unauthenticated.ping()
    finally:
        worker.stop()
        server.stop()
