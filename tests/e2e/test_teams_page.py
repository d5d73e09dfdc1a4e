"""Teams on the page and the Gradio API: ``python app.py`` itself with three users (root an admin) and
a rate limit. Alice's page and Gradio API jobs are hers: Bob gets the unknown-id answer for them on
every Gradio endpoint and over REST, root sees and cancels them; in Chromium each user's Tasks tab
lists their own jobs and the header shows their own numbers."""

from __future__ import annotations

import base64
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e.helpers import EXAMPLES
from tests.integration.test_jobs import steps_job
from tests.support.stack import start_app, wait_until

ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22", "root": "root-password-333"}
UNKNOWN = "00000000-0000-4000-8000-000000000000"
FINISHED = ("SUCCESS", "FAILURE", "REVOKED")


def login(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()}


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[str]:
    """app.py with access control, an admin and a rate limit; the test operation known to its workers."""
    tmp = tmp_path_factory.mktemp("teams-page")
    site = tmp / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("from tests.support.operations import register\nregister()\n")
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "ATELIER_REDIS_URL")}
    env |= {
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
        "ATELIER_DATA_DIR": str(tmp / "data"),
        "ATELIER_AUTH": ",".join(f"{user}:{password}" for user, password in PASSWORDS.items()),
        "ATELIER_ADMINS": "root",
        "ATELIER_RATE_LIMIT": "120/minute",
    }
    process, http = start_app(env, artifacts / "app-teams-page.log", timeout=120)
    try:
        yield str(http.base_url).rstrip("/")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


@pytest.fixture(scope="module")
def clients(studio: str) -> dict[str, Any]:
    from gradio_client import Client

    return {user: Client(studio, headers=login(user), verbose=False) for user in PASSWORDS}


@pytest.fixture(scope="module")
def alices(studio: str, clients: dict[str, Any]) -> dict[str, str]:
    """Alice's finished page job (submit_style_transfer) and finished batch (submit_batch)."""
    from gradio_client import handle_file

    alice = clients["alice"]
    photo = handle_file(str(EXAMPLES / "coffee.jpg"))
    job = alice.predict(*style_inputs(alice, photo), api_name="/submit_style_transfer")
    batch = alice.predict("style_transfer", [photo], '{"style": "mosaic", "strength": 0.8}', api_name="/submit_batch")
    wait_until(lambda: alice.predict(job, api_name="/task_status")["status"] in FINISHED, 120, 0.3, "alice's job")
    wait_until(lambda: alice.predict(batch, api_name="/batch_status")["status"] in FINISHED, 120, 0.3, "the batch")
    assert alice.predict(job, api_name="/task_status")["status"] == "SUCCESS"
    return {"job": job, "batch": batch}


def style_inputs(client: Any, photo: Any) -> list[Any]:
    """submit_style_transfer's inputs in the order the endpoint lists them (the last ones may be optional)."""
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/submit_style_transfer"]
    values = {"image": photo, "style": "starry-night", "style_image": None, "strength": 0.8, "engine": "fast"}
    values |= {"preserve_color": False, "then": ""}
    return [values[parameter["parameter_name"]] for parameter in api["parameters"]]


def refusal(client: Any, value: str, api_name: str) -> str:
    """The error message ``api_name`` answers for ``value``, the id itself written as ID."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as caught:
        client.predict(value, api_name=api_name)
    return str(caught.value).replace(value, "ID")


@pytest.mark.parametrize(
    ("api_name", "kind"),
    [
        ("/task_status", "job"),
        ("/task_result", "job"),
        ("/cancel_task", "job"),
        ("/batch_status", "batch"),
        ("/batch_result", "batch"),
        ("/cancel_batch", "batch"),
    ],
)
def test_another_users_id_answers_as_an_unknown_id(
    clients: dict[str, Any], alices: dict[str, str], api_name: str, kind: str
) -> None:
    bob = clients["bob"]
    theirs, never = refusal(bob, alices[kind], api_name), refusal(bob, UNKNOWN, api_name)
    assert theirs == never and "not found" in theirs.lower()


def test_alice_and_root_see_alices_jobs_on_every_endpoint(clients: dict[str, Any], alices: dict[str, str]) -> None:
    for user in ("alice", "root"):
        client = clients[user]
        assert client.predict(alices["job"], api_name="/task_status")["status"] == "SUCCESS"
        assert Path(client.predict(alices["job"], api_name="/task_result")).stat().st_size > 0
        assert client.predict(alices["batch"], api_name="/batch_status")["status"] == "SUCCESS"
        assert Path(client.predict(alices["batch"], api_name="/batch_result")).suffix == ".zip"


def test_a_page_job_is_its_submitters_over_rest(studio: str, alices: dict[str, str]) -> None:
    status = f"{studio}/api/v1/tasks/{alices['job']}/status/"
    png = f"{studio}/api/v1/tasks/{alices['job']}/result/?format=png"
    for user, expected in (("alice", 200), ("root", 200), ("bob", 404)):
        assert httpx.get(status, headers=login(user)).status_code == expected, user
        assert httpx.get(png, headers=login(user)).status_code == expected, user
    listed = {user: httpx.get(f"{studio}/api/v1/tasks/?limit=50", headers=login(user)).json() for user in PASSWORDS}
    assert alices["job"] in {task["task_id"] for task in listed["alice"]["tasks"]}
    assert alices["job"] in {task["task_id"] for task in listed["root"]["tasks"]}
    assert not listed["bob"]["tasks"]


def test_root_cancels_alices_running_job_and_bob_cannot(studio: str, clients: dict[str, Any]) -> None:
    response = httpx.post(
        f"{studio}/api/v1/tasks/submit/", json=steps_job(steps=600, delay=0.1), headers=login("alice")
    )
    assert response.status_code == 202, response.text
    job = response.json()["task_id"]
    try:
        assert refusal(clients["bob"], job, "/cancel_task") == refusal(clients["bob"], UNKNOWN, "/cancel_task")
        assert clients["root"].predict(job, api_name="/cancel_task")["status"] == "REVOKED"
    finally:
        httpx.post(f"{studio}/api/v1/tasks/{job}/cancel/", headers=login("root"))
    assert clients["alice"].predict(job, api_name="/task_status")["status"] == "REVOKED"


def open_as(browser: Any, studio: str, user: str) -> Any:
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, http_credentials={"username": user, "password": PASSWORDS[user]}
    )
    page = context.new_page()
    page.goto(studio)
    expect(page.get_by_role("tab", name="Tasks")).to_be_visible(timeout=30_000)
    return page


def test_each_users_tasks_tab_and_header_show_their_own(
    browser: Any, studio: str, alices: dict[str, str], artifacts: Path
) -> None:
    pages = {user: open_as(browser, studio, user) for user in ("alice", "bob")}
    try:
        for user, page in pages.items():
            usage = page.locator("#atelier-usage")
            expect(usage).to_contain_text(f"{user}:", timeout=20_000)
            expect(usage).to_contain_text(
                re.compile(r"\d+ running · \d+ waiting · \d+ of 120 submissions left this minute")
            )
            page.get_by_role("tab", name="Tasks").click()
        expect(pages["bob"].locator("#atelier-usage")).to_contain_text("0 running · 0 waiting · 120 of 120")
        expect(pages["alice"].locator("#history-table")).to_contain_text(alices["job"], timeout=20_000)
        expect(pages["alice"].locator("#history-table")).to_contain_text("Style transfer")
        expect(pages["alice"].locator("#history-gallery img").first).to_be_visible()
        pages["alice"].locator("#history-table").get_by_text(alices["job"]).click()  # open it
        expect(pages["alice"].locator("#lookup-id textarea, #lookup-id input").first).to_have_value(alices["job"])
        expect(pages["alice"].locator("#lookup-status")).to_contain_text("Done")
        expect(pages["bob"].locator("#history-note")).to_contain_text("No jobs yet")
        expect(pages["bob"].locator("#history-table")).not_to_contain_text(alices["job"])
    finally:
        for user, page in pages.items():
            page.screenshot(path=str(artifacts / f"teams-page-{user}.png"), full_page=True)
            page.context.close()
