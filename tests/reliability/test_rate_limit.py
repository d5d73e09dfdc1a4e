"""ATELIER_RATE_LIMIT: per-client submissions counted in Redis; over it, 429 + Retry-After and nothing enqueued."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from access import RequireAuth
from jobs import JobClient, requester
from settings import Settings
from tasks.store import broker_lists
from tests.integration.test_jobs import steps_job

TOKENS = ("a" * 20, "b" * 20)


@pytest.fixture
def db(redis_url: str) -> Iterator[tuple[str, redis.Redis]]:
    url = redis_url.rsplit("/", 1)[0] + "/9"  # no worker consumes db 9: accepted jobs stay queued
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url, client
    client.flushdb()


def app_for(url: str, **settings: Any) -> tuple[Any, Settings]:
    from api import create_api

    config = Settings(redis_url=url, **settings)
    client = JobClient(config)
    return create_api(lambda: client, config), config


def enqueued(db: redis.Redis) -> tuple[int, int]:
    """(messages in the cpu queue, at every priority, job records)."""
    messages = sum(int(db.llen(name)) for name in broker_lists("cpu"))
    return messages, sum(1 for key in db.scan_iter("atelier:job:*") if key.count(b":") == 2)


def test_over_the_limit_is_a_429_with_retry_after_and_nothing_enqueued(db: tuple[str, redis.Redis]) -> None:
    url, client = db
    app, _ = app_for(url, rate_limit="3/5s")  # 5 s: the first submits may be slow
    with TestClient(app) as http, TestClient(app, client=("10.9.8.7", 4000)) as other:
        assert [http.post("/api/v1/tasks/submit/", json=steps_job()).status_code for _ in range(3)] == [202] * 3
        before = enqueued(client)
        refused = http.post("/api/v1/tasks/submit/", json=steps_job())
        assert refused.status_code == 429
        retry_after = int(refused.headers["Retry-After"])
        assert 1 <= retry_after <= 5
        body = refused.json()
        assert body["error"] == "Too many requests" and body["retry_after"] == retry_after
        assert "3/5s" in body["message"] and f"try again in {retry_after} s" in body["message"]
        assert enqueued(client) == before == (3, 3)
        # Bad or huge bodies count too, and are refused before they are read.
        assert (
            http.post("/api/v1/tasks/submit/", content=b"x" * 1000, headers={"content-type": "text/plain"}).status_code
            == 429
        )

        assert other.post("/api/v1/tasks/submit/", json=steps_job()).status_code == 202  # another client
        time.sleep(retry_after + 0.1)
        assert http.post("/api/v1/tasks/submit/", json=steps_job()).status_code == 202  # the window reset
    assert enqueued(client) == (5, 5)


def test_no_limit_by_default(db: tuple[str, redis.Redis]) -> None:
    url, client = db
    app, config = app_for(url)
    assert config.rate_window is None
    with TestClient(app) as http:
        assert {http.post("/api/v1/tasks/submit/", json=steps_job()).status_code for _ in range(30)} == {202}
    assert not list(client.scan_iter("atelier:rate:*"))


def test_forwarded_for_is_ignored_unless_a_proxy_is_trusted(db: tuple[str, redis.Redis]) -> None:
    url, _ = db
    app, _ = app_for(url, rate_limit="1/minute")
    with TestClient(app) as http:
        assert http.post("/api/v1/tasks/submit/", json=steps_job(), headers={"X-Forwarded-For": "1.1.1.1"}).is_success
        spoofed = http.post("/api/v1/tasks/submit/", json=steps_job(), headers={"X-Forwarded-For": "2.2.2.2"})
        assert spoofed.status_code == 429  # same peer, whatever it claims

    app, _ = app_for(url, rate_limit="1/minute", trusted_proxies=1)
    with TestClient(app, client=("10.0.0.1", 1)) as proxy:  # every request arrives from the proxy

        def submit(forwarded: str) -> int:
            response = proxy.post("/api/v1/tasks/submit/", json=steps_job(), headers={"X-Forwarded-For": forwarded})
            return response.status_code

        assert submit("3.3.3.3") == 202
        assert submit("4.4.4.4") == 202  # another client behind the same proxy
        assert submit("9.9.9.9, 3.3.3.3") == 429  # a forged entry on the left changes nothing


def test_with_access_control_each_token_or_user_has_its_own_limit(db: tuple[str, redis.Redis]) -> None:
    url, _ = db
    app, config = app_for(url, rate_limit="1/minute", api_tokens=",".join(TOKENS), auth="ann:correct-horse")
    with TestClient(app) as http:

        def submit(authorization: str) -> int:
            headers = {"Authorization": authorization}
            return http.post("/api/v1/tasks/submit/", json=steps_job(), headers=headers).status_code

        basic = "Basic " + base64.b64encode(b"ann:correct-horse").decode()
        assert [submit(f"Bearer {TOKENS[0]}"), submit(f"Bearer {TOKENS[0]}")] == [202, 429]
        assert submit(f"Bearer {TOKENS[1]}") == 202  # same address, another token
        assert [submit(basic), submit(basic)] == [202, 429]
        assert submit("Bearer " + "c" * 20) == 401  # bad credentials never reach the counter
    checked = RequireAuth(None, config.credentials, config.tokens).identify  # type: ignore[arg-type]
    bearer = [(b"authorization", f"Bearer {TOKENS[0]}".encode())]
    user = checked({"headers": bearer})
    assert requester(user, {}, "1.2.3.4", config).startswith("token:")
    assert TOKENS[0] not in requester(user, {}, "1.2.3.4", config)
    # Without access control, a claimed user is just a header: the middleware checks none, the address counts.
    assert requester(None, {"authorization": basic}, "1.2.3.4", Settings()) == "ip:1.2.3.4"


def test_the_gradio_api_is_limited_too(db: tuple[str, redis.Redis], monkeypatch: pytest.MonkeyPatch) -> None:
    import gradio as gr
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    import ui.common
    from api import create_api
    from tests.support.stack import serving
    from ui import build_ui

    url, client = db
    config = Settings(redis_url=url, rate_limit="2/minute")
    jobs = JobClient(config)
    monkeypatch.setattr(ui.common, "get_client", lambda: jobs)
    app = gr.mount_gradio_app(create_api(lambda: jobs, config), build_ui(), path="/")
    image = handle_file("tests/images/astronaut_256.png")
    with serving(app) as base:
        gradio = Client(base, verbose=False)
        ids = [gradio.predict(image, "mosaic", None, 0.8, "fast", False, api_name="/submit_style_transfer")]
        ids.append(gradio.predict(image, "mosaic", None, 0.8, "fast", False, api_name="/submit_style_transfer"))
        with pytest.raises(AppError, match="Too many submissions"):
            gradio.predict(image, "mosaic", None, 0.8, "fast", False, api_name="/submit_style_transfer")
        with pytest.raises(AppError, match="Too many submissions"):
            gradio.predict(image, "mosaic", None, 0.8, "fast", False, api_name="/style_transfer")
    assert len(set(ids)) == 2
    assert enqueued(client) == (0, 2)  # the refused ones stored nothing (the 2 are on the gpu queue)
