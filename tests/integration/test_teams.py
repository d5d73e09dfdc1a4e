"""Teams: each job belongs to its submitter, others see an unknown id; admins see all; history, fair
turns between owners, the active-jobs cap and RateLimit headers. Real Redis and real workers."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jobs import JobClient
from jobs.owners import Usage
from settings import Settings
from tasks.store import job_key
from tests.conftest import b64
from tests.integration.conftest import Api
from tests.integration.test_jobs import SMALL, steps_job
from tests.support.stack import Worker, wait_until

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22", "root": "root-password-333"}
CI_TOKEN = "ci-token-" + "5" * 24
UNKNOWN = "00000000-0000-4000-8000-000000000000"


def login(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()}


def team_app(redis_url: str, **settings: Any) -> TestClient:
    from api import create_api

    auth = ",".join(f"{user}:{password}" for user, password in PASSWORDS.items())
    config = Settings(redis_url=redis_url, auth=auth, api_tokens=f"ci:{CI_TOKEN}", admins="root", **settings)
    client = JobClient(config)
    return TestClient(create_api(lambda: client, config))


@pytest.fixture(scope="module")
def team(redis_url: str, workers: dict[str, Worker]) -> Iterator[TestClient]:
    with team_app(redis_url) as http:
        yield http


def submit(http: TestClient, user: str, body: dict[str, Any], path: str = "/api/v1/tasks/submit/") -> dict[str, Any]:
    response = http.post(path, json=body, headers=login(user))
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


def routes(task_id: str, batch_id: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"/api/v1/tasks/{task_id}/status/"),
        ("GET", f"/api/v1/tasks/{task_id}/status/?wait=1"),
        ("GET", f"/api/v1/tasks/{task_id}/result/"),
        ("GET", f"/api/v1/tasks/{task_id}/result/?format=png"),
        ("GET", f"/api/v1/tasks/{task_id}/events"),
        ("POST", f"/api/v1/tasks/{task_id}/cancel/"),
        ("GET", f"/api/v1/batches/{batch_id}/"),
        ("GET", f"/api/v1/batches/{batch_id}/result/?format=zip"),
        ("GET", f"/api/v1/batches/{batch_id}/events"),
        ("POST", f"/api/v1/batches/{batch_id}/cancel/"),
    ]


def test_another_owners_ids_answer_as_unknown_ids_on_every_route(team: TestClient) -> None:
    job = submit(team, "alice", steps_job(steps=1, delay=0))["task_id"]
    chain = submit(team, "alice", {**steps_job(steps=1, delay=0), "then": [{"task_type": "test_steps"}]})["task_id"]
    batch = submit(team, "alice", {"task_type": "test_steps", "items": [{"image": b64(SMALL)}]}, "/api/v1/batches/")
    item = batch["task_ids"][0]
    wait_until(lambda: team.get(f"/api/v1/batches/{batch['batch_id']}/", headers=login("alice")).json()["status"]
               == "SUCCESS", 30, what="alice's batch")  # fmt: skip
    for task_id in (job, chain, item):
        for (method, path), (_, unknown_path) in zip(
            routes(task_id, batch["batch_id"]), routes(UNKNOWN, UNKNOWN), strict=True
        ):
            theirs = team.request(method, path, headers=login("bob"))
            never = team.request(method, unknown_path, headers=login("bob"))
            assert theirs.status_code == never.status_code == 404, (path, theirs.text)
            assert theirs.text.replace(task_id, "ID").replace(batch["batch_id"], "ID") == never.text.replace(
                UNKNOWN, "ID"
            )
            mine = team.request(method, path, headers=login("alice"))
            assert mine.status_code != 404, (path, mine.text)
    by_token = team.get(f"/api/v1/tasks/{job}/status/", headers={"Authorization": f"Bearer {CI_TOKEN}"})
    assert by_token.status_code == 404  # a token is an owner of its own
    assert team.get(f"/api/v1/tasks/{job}/status/", headers=login("root")).status_code == 200  # an admin sees all


def test_an_admin_cancels_anyones_job_and_a_named_token_owns_its_jobs(team: TestClient) -> None:
    token = {"Authorization": f"Bearer {CI_TOKEN}"}
    response = team.post("/api/v1/tasks/submit/", json=steps_job(steps=200, delay=0.05), headers=token)
    task_id = response.json()["task_id"]
    assert team.post(f"/api/v1/tasks/{task_id}/cancel/", headers=login("bob")).status_code == 404
    assert team.post(f"/api/v1/tasks/{task_id}/cancel/", headers=login("root")).json()["status"] == "REVOKED"
    listed = team.get("/api/v1/tasks/", headers=token).json()["tasks"]
    assert listed[0]["task_id"] == task_id and listed[0]["status"] == "REVOKED"


def test_history_lists_the_callers_own_jobs_newest_first_by_cursor(team: TestClient) -> None:
    mine = [submit(team, "bob", steps_job(steps=1, delay=0))["task_id"] for _ in range(5)]
    batch = submit(team, "bob", {"task_type": "test_steps", "items": [{"image": b64(SMALL)}] * 2}, "/api/v1/batches/")
    theirs = submit(team, "alice", steps_job(steps=1, delay=0))["task_id"]
    pages, cursor = [], None
    while True:
        response = team.get("/api/v1/tasks/", params={"limit": 3, **({"cursor": cursor} if cursor else {})},
                            headers=login("bob"))  # fmt: skip
        assert response.status_code == 200, response.text
        pages.append(response.json()["tasks"])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    listed = [entry for page in pages for entry in page]
    ids = [entry["task_id"] for entry in listed]
    assert all(len(page) <= 3 for page in pages) and len(ids) == len(set(ids))
    assert ids[:7] == [*reversed(batch["task_ids"]), *reversed(mine)]  # newest first
    assert theirs not in ids
    assert all(entry["batch_id"] == batch["batch_id"] for entry in listed[:2])
    assert {"task_id", "task_type", "status", "created_at"} <= set(listed[0])
    created = [entry["created_at"] for entry in listed]
    assert created == sorted(created, reverse=True)
    everyone = [
        entry["task_id"] for entry in team.get("/api/v1/tasks/?limit=200", headers=login("root")).json()["tasks"]
    ]
    assert theirs in everyone and mine[0] in everyone
    assert team.get("/api/v1/tasks/?cursor=not-a-cursor", headers=login("bob")).status_code == 400
    assert team.get("/api/v1/tasks/?limit=0", headers=login("bob")).status_code in (400, 422)


def test_owners_take_turns_in_a_queue(team: TestClient, redis_url: str, busy_cpu: str) -> None:
    """Alice has 20 jobs waiting; Bob's new job, submitted through another web process, waits for one
    of hers at most (the one already at the front of the queue)."""
    alice = [submit(team, "alice", steps_job(steps=1, delay=0.1, marker=f"turns-a-{n}"))["task_id"] for n in range(20)]
    with team_app(redis_url) as other_web_process:
        bob = submit(other_web_process, "bob", steps_job(steps=1, delay=0.1, marker="turns-b"))["task_id"]
        assert other_web_process.get(f"/api/v1/tasks/{bob}/status/", headers=login("bob")).json()["position"] == 2
        second = submit(other_web_process, "bob", steps_job(steps=1, delay=0.1, marker="turns-b2"))["task_id"]
        assert other_web_process.get(f"/api/v1/tasks/{second}/status/", headers=login("bob")).json()["position"] == 4
    assert team.get(f"/api/v1/tasks/{alice[-1]}/status/", headers=login("alice")).json()["position"] == 22
    team.post(f"/api/v1/tasks/{busy_cpu}/cancel/", headers=login("root"))
    wait_until(lambda: team.get(f"/api/v1/tasks/{second}/status/", headers=login("bob")).json()["status"] == "SUCCESS",
               60, what="bob's jobs")  # fmt: skip

    db = JobClient(Settings(redis_url=redis_url)).store.redis

    def started(task_id: str) -> float:  # not started (yet): after everything
        return float(db.hget(job_key(task_id), "started") or "inf")

    before_bob = [task_id for task_id in alice if started(task_id) < started(bob)]
    assert len(before_bob) <= 1, before_bob
    for task_id in alice:
        team.post(f"/api/v1/tasks/{task_id}/cancel/", headers=login("alice"))


def test_the_active_jobs_cap(redis_url: str, workers: dict[str, Worker], busy_cpu: str) -> None:
    with team_app(redis_url, max_active_per_user=3) as http:
        waiting = [submit(http, "alice", steps_job(steps=1, delay=0))["task_id"] for _ in range(3)]
        over = http.post("/api/v1/tasks/submit/", json=steps_job(steps=1, delay=0), headers=login("alice"))
        assert over.status_code == 429 and over.json()["error"] == "Too many active jobs", over.text
        assert "the limit is 3 (ATELIER_MAX_ACTIVE_PER_USER)" in over.json()["message"]
        assert "Retry-After" in over.headers
        batch = {"task_type": "test_steps", "items": [{"image": b64(SMALL)}] * 2}
        assert http.post("/api/v1/batches/", json=batch, headers=login("bob")).status_code == 202  # bob's own count
        assert http.post("/api/v1/batches/", json=batch, headers=login("alice")).status_code == 429
        http.post(f"/api/v1/tasks/{waiting[0]}/cancel/", headers=login("alice"))
        assert (
            http.post("/api/v1/tasks/submit/", json=steps_job(steps=1, delay=0), headers=login("alice")).status_code
            == 202
        )


def test_submit_answers_carry_ratelimit_headers(redis_url: str, workers: dict[str, Worker]) -> None:
    with team_app(redis_url, rate_limit="4/minute") as http:
        answers = [http.post("/api/v1/tasks/submit/", json=steps_job(steps=1, delay=0), headers=login("bob"))
                   for _ in range(2)]  # fmt: skip
        bad = http.post("/api/v1/tasks/submit/", json={"task_type": "test_steps"}, headers=login("bob"))
        assert [answer.status_code for answer in answers] == [202, 202] and bad.status_code == 400
        assert [answer.headers["RateLimit-Remaining"] for answer in [*answers, bad]] == ["3", "2", "1"]
        assert all(answer.headers["RateLimit-Limit"] == "4" for answer in answers)
        assert 0 < int(answers[0].headers["RateLimit-Reset"]) <= 60
        batch = http.post("/api/v1/batches/", json={"task_type": "test_steps", "items": [{"image": b64(SMALL)}]},
                          headers=login("bob"))  # fmt: skip
        assert batch.headers["RateLimit-Remaining"] == "0"
        over = http.post("/api/v1/tasks/submit/", json=steps_job(steps=1, delay=0), headers=login("bob"))
        assert over.status_code == 429 and "Retry-After" in over.headers


def test_without_access_control_the_studio_is_one_persons(api: Api) -> None:
    task_id = api.submit(steps_job(steps=1, delay=0))
    listed = api.http.get("/api/v1/tasks/?limit=5").json()
    assert task_id in [entry["task_id"] for entry in listed["tasks"]]
    assert api.http.get(f"/api/v1/tasks/{task_id}/status/", headers={"X-Forwarded-For": "10.9.9.9"}).status_code == 200


def test_usage_counts_the_callers_waiting_jobs_and_peeks_the_rate_window(
    redis_url: str, workers: dict[str, Worker], busy_cpu: str
) -> None:
    from jobs.limits import RateWindow

    config = Settings(redis_url=redis_url, auth="carol:carol-password-4", rate_limit="10/minute")
    client = JobClient(config)
    carol = client.caller("user:carol", {}, None)
    assert client.usage(carol) == Usage(0, 0, RateWindow(10, 10, 60))
    jobs = [client.submit(steps_job(steps=1, delay=0), caller=carol).task_id for _ in range(2)]  # behind busy_cpu
    client.admit("user:carol", {}, None)
    usage = client.usage(carol)
    assert (usage.running, usage.waiting) == (0, 2)
    assert usage.window is not None and usage.window.remaining == 9
    again = client.usage(carol).window
    assert again is not None and again.remaining == 9  # looking counts no submission
    client.cancel(jobs[0])
    assert client.usage(carol).waiting == 1
    client.cancel(jobs[1])
    assert client.usage(client.caller("user:dave", {}, None)) == Usage(0, 0, RateWindow(10, 10, 60))
