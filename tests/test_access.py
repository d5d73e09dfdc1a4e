"""``access.RequireAuth`` as a plain ASGI app: the scope, receive and send are built here, and the
inner app records the scope it was handed (tests/reliability/test_access.py runs the real stack)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from access import USER, RequireAuth, checked_user
from tests.support.loop import run_async

PASSWORD = "correct-horse-battery"
TOKEN = "a-long-api-token-0123456789"


class Recorder:
    """The protected app: answers 200 and keeps the scope it got."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})


def call(
    authorization: str | None = None, path: str = "/api/v1/tasks/submit/", kind: str = "http"
) -> tuple[Recorder, list[dict[str, Any]]]:
    """One request through the middleware: the inner app and the messages sent back."""
    inner, sent = Recorder(), []
    headers = [(b"authorization", authorization.encode("latin-1"))] if authorization is not None else []
    scope = {"type": kind, "path": path, "headers": headers}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    run_async(RequireAuth(inner, {"alice": PASSWORD}, {TOKEN})(scope, receive, send))
    return inner, sent


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def assert_refused(inner: Recorder, sent: list[dict[str, Any]]) -> None:
    assert not inner.scopes
    start, body = sent
    assert start["status"] == 401
    headers = dict(start["headers"])
    assert headers[b"www-authenticate"].startswith(b'Basic realm="Atelier"')
    assert headers[b"content-type"] == b"application/json"
    assert json.loads(body["body"])["error"] == "Unauthorized"


def test_the_right_password_is_let_in_as_its_user() -> None:
    inner, sent = call(basic("alice", PASSWORD))
    (scope,) = inner.scopes
    assert checked_user(scope) == scope[USER] == "user:alice"
    assert sent[0]["status"] == 200


def test_a_token_is_let_in_as_its_digest_never_as_itself() -> None:
    inner, _ = call(f"Bearer {TOKEN}")
    (scope,) = inner.scopes
    assert checked_user(scope) == "token:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:24]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        basic("alice", "wrong-password"),
        basic("alice", PASSWORD[:-1]),
        basic("mallory", PASSWORD),
        "Basic not-base64!",
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),  # not UTF-8
        "Basic " + base64.b64encode(b"alice").decode(),  # no colon, no password
        "Bearer wrong-token-0123456789",
        "Bearer ",
        f"Token {TOKEN}",  # an unknown scheme
    ],
    ids=[
        "no-header",
        "empty",
        "wrong-password",
        "password-prefix",
        "unknown-user",
        "bad-base64",
        "not-utf8",
        "no-colon",
        "wrong-token",
        "empty-token",
        "unknown-scheme",
    ],
)
def test_anything_else_is_a_401_with_a_basic_challenge(authorization: str | None) -> None:
    assert_refused(*call(authorization))


def test_a_websocket_without_credentials_is_closed_as_a_policy_violation() -> None:
    inner, sent = call(kind="websocket", path="/queue/join")
    assert not inner.scopes
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_a_websocket_with_credentials_goes_through() -> None:
    inner, sent = call(basic("alice", PASSWORD), kind="websocket", path="/queue/join")
    assert checked_user(inner.scopes[0]) == "user:alice" and not sent


@pytest.mark.parametrize("path", ["/healthz", "/healthz/"])
def test_healthz_is_open_and_names_no_user(path: str) -> None:
    inner, sent = call(path=path)
    (scope,) = inner.scopes
    assert checked_user(scope) is None and USER not in scope
    assert sent[0]["status"] == 200


def test_an_open_path_ignores_credentials_too() -> None:
    inner, _ = call(basic("alice", PASSWORD), path="/healthz")
    assert checked_user(inner.scopes[0]) is None


def test_lifespan_passes_through() -> None:
    inner, sent = call(kind="lifespan", path="")
    assert len(inner.scopes) == 1 and not sent
