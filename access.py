"""Optional access control: HTTP Basic (ATELIER_AUTH) or Bearer tokens (ATELIER_API_TOKENS), for the
page, the Gradio API and the REST API alike. One ASGI middleware, so nothing can be left out."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]
OPEN_PATHS = {"/healthz", "/healthz/"}  # for load balancers and compose healthchecks
USER = "atelier.user"  # the ASGI scope's key for the checked caller, "user:<name>" or "token:<digest>"


def checked_user(scope: Scope) -> str | None:
    """Who the middleware let in ("user:alice", "token:3f…"), or None without access control."""
    user = scope.get(USER)
    return user if isinstance(user, str) else None


class RequireAuth:
    """Answer 401 (with a Basic challenge, so browsers ask) unless the request carries valid credentials."""

    def __init__(self, app: ASGIApp, credentials: dict[str, str], tokens: Mapping[str, str | None] | set[str]) -> None:
        self.app, self.credentials = app, credentials
        self.tokens = dict.fromkeys(tokens) if isinstance(tokens, set) else dict(tokens)  # token → its name

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        user = self.identify(scope)
        if user is not None:
            scope[USER] = user  # handed on: nothing after this parses the header again
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": "Unauthorized", "message": "Log in (ATELIER_AUTH) or send a Bearer API token"})
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Basic realm="Atelier", charset="UTF-8"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})

    def identify(self, scope: Scope) -> str | None:
        """The caller its credentials prove ("user:<name>", "token:<name>" or "token:<digest>"), or None."""
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            token = value.strip()
            for known, name in self.tokens.items():
                if hmac.compare_digest(token, known):  # a named token is its name; else a digest, no secret
                    return "token:" + (name or hashlib.sha256(token.encode()).hexdigest()[:24])
            return None
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            expected = self.credentials.get(user)
            return f"user:{user}" if expected is not None and hmac.compare_digest(password, expected) else None
        return None


class RateLimitHeaders:
    """Adds the ``RateLimit-*`` headers a submit route noted (``request.state.rate_limit_headers``) to its
    answer, whatever the answer is: an accepted job, a refused body, an error."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            noted = (scope.get("state") or {}).get("rate_limit_headers")
            if message["type"] == "http.response.start" and noted:
                extra = [(key.lower().encode(), value.encode()) for key, value in noted.items()]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
