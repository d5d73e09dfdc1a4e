"""Idempotent submits: an ``Idempotency-Key`` makes a retried submit answer the first one again.

The key is kept in Redis for the result TTL, per caller, with a fingerprint of what was submitted
(the parsed fields, images by digest: a multipart retry with a new boundary is the same submit).
A second submit with the key waits while the first is still being enqueued, then answers what it
answered; the same key with other content is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobs.errors import redis_reachable
from tasks.store import PREFIX, JobStore

KEY_PATTERN = re.compile(r"[\x20-\x7e]{1,255}")  # 1-255 printable ASCII characters
PENDING_FOR = 60  # seconds a submit in progress holds its key before another may take it over
WAIT_FOR_FIRST = 30.0  # seconds a concurrent retry waits for the first submit's answer


class IdempotencyConflict(RuntimeError):
    """The key was used with other content (422), or its first submit is still going on (409)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class Replay:
    """The first submit's answer: its status code and JSON body."""

    status_code: int
    body: dict[str, Any]


def valid_key(key: str) -> bool:
    return bool(KEY_PATTERN.fullmatch(key))


def fingerprint(route: str, fields: Mapping[str, Any], items: Any = None) -> str:
    """A digest of what was submitted, the same for the same content however it was encoded."""

    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return {"sha256": hashlib.sha256(value).hexdigest()}
        if isinstance(value, dict):
            return {str(key): plain(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [plain(item) for item in value]
        return value

    document = json.dumps([route, plain(dict(fields)), plain(items)], sort_keys=True, default=str)
    return hashlib.sha256(document.encode()).hexdigest()


class IdempotencyKeys:
    """The keys in Redis: ``begin`` before enqueuing, then ``finish`` (or ``abandon`` on an error)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def _name(self, caller: str, key: str) -> str:
        digest = hashlib.sha256(f"{caller}\n{key}".encode()).hexdigest()[:32]
        return f"{PREFIX}:idempotency:{digest}"

    def begin(self, caller: str, key: str, content: str) -> Replay | None:
        """None when this submit goes ahead (it holds the key now); the first answer for a retry;
        :class:`IdempotencyConflict` when the key was used with other content."""
        name = self._name(caller, key)
        pending = json.dumps({"fingerprint": content})
        deadline = time.monotonic() + WAIT_FOR_FIRST
        while True:
            with redis_reachable():
                if self.store.redis.set(name, pending, nx=True, ex=PENDING_FOR):
                    return None
                raw = self.store.redis.get(name)
            if raw is None:
                continue  # expired between the two reads: try to take it
            held = json.loads(raw)
            if held["fingerprint"] != content:
                raise IdempotencyConflict(
                    "This Idempotency-Key was used with another request body; use a new key for a new submit", 422
                )
            if "body" in held:
                return Replay(held["status_code"], held["body"])
            if time.monotonic() > deadline:
                raise IdempotencyConflict("A submit with this Idempotency-Key is still in progress; retry later", 409)
            time.sleep(0.05)

    def finish(self, caller: str, key: str, content: str, status_code: int, body: dict[str, Any]) -> None:
        """Keep the answer for the result TTL: retries within it get the same answer."""
        answer = json.dumps({"fingerprint": content, "status_code": status_code, "body": body})
        with redis_reachable():
            self.store.redis.set(self._name(caller, key), answer, ex=self.store.ttl)

    def abandon(self, caller: str, key: str) -> None:
        """Free the key of a submit that was refused or failed: nothing was accepted under it."""
        with redis_reachable():
            self.store.redis.delete(self._name(caller, key))
