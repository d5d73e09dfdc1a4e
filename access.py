"""Optional access control: HTTP Basic (ATELIER_AUTH) or Bearer tokens (ATELIER_API_TOKENS), for the
page, the Gradio API and the REST API alike. One ASGI middleware, so nothing can be left out."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]
OPEN_PATHS = {"/healthz", "/healthz/"}  # for load balancers and compose healthchecks


class RequireAuth:
    """Answer 401 (with a Basic challenge, so browsers ask) unless the request carries valid credentials."""

    def __init__(self, app: ASGIApp, credentials: dict[str, str], tokens: set[str]) -> None:
        self.app, self.credentials, self.tokens = app, credentials, tokens

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in OPEN_PATHS or self.allowed(scope):
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

    def allowed(self, scope: Scope) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return any(hmac.compare_digest(value.strip(), token) for token in self.tokens)
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            expected = self.credentials.get(user)
            return expected is not None and hmac.compare_digest(password, expected)
        return False
