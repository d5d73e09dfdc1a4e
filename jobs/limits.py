"""Who a submission counts against, and the rate limit (ATELIER_RATE_LIMIT) counted in Redis."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from jobs.errors import RateLimited, redis_reachable
from settings import Settings
from tasks.store import JobStore, rate_key


def requester(user: str | None, headers: Mapping[str, str], peer: str | None, settings: Settings) -> str:
    """Who a submission counts against: the caller the auth middleware checked (``user``, from
    ``access.checked_user``), else the client's IP address. X-Forwarded-For can be written by
    anyone, so it is read only with ``trusted_proxies`` set: each trusted proxy appends the address
    it saw, so the client is that many entries from the right."""
    if user:
        return user
    if settings.trusted_proxies:
        hops = [hop.strip() for hop in (headers.get("x-forwarded-for") or "").split(",") if hop.strip()]
        if len(hops) >= settings.trusted_proxies:
            return "ip:" + hops[-settings.trusted_proxies]
    return "ip:" + (peer or "unknown")


@dataclass(frozen=True)
class RateWindow:
    """A client's rate-limit window after a submission: what ``RateLimit-*`` headers tell."""

    limit: int
    remaining: int
    reset: int  # seconds until the window starts anew

    def headers(self) -> dict[str, str]:
        return {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                "RateLimit-Reset": str(self.reset)}  # fmt: skip


class RateLimiter:
    """A fixed window of submissions per client, shared by every web process through Redis."""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store, self.settings = store, settings

    def admit(self, client: str) -> RateWindow | None:
        """Count one submission of ``client``; :class:`RateLimited` when over the limit. The window
        after this submission, or None without a limit."""
        window = self.settings.rate_window
        if window is None:
            return None
        allowed, seconds = window
        with redis_reachable():
            count, left = self.store.submissions.count(client, seconds)
        if count > allowed:
            retry_after = max(1, math.ceil(left))
            raise RateLimited(
                f"Too many submissions: the limit is {self.settings.rate_limit} per client; "
                f"try again in {retry_after} s",
                retry_after,
            )
        return RateWindow(limit=allowed, remaining=max(0, allowed - count), reset=max(1, math.ceil(left)))

    def peek(self, client: str) -> RateWindow | None:
        """``client``'s current window without counting a submission (one round trip), or None
        without a limit."""
        window = self.settings.rate_window
        if window is None:
            return None
        allowed, seconds = window
        with redis_reachable():
            pipe = self.store.redis.pipeline(transaction=False)
            pipe.get(rate_key(client))
            pipe.pttl(rate_key(client))
            raw, left = pipe.execute()
        count = int(raw) if raw is not None and left > 0 else 0  # no key (or no expiry yet): a fresh window
        reset = math.ceil(left / 1000) if left > 0 else seconds
        return RateWindow(limit=allowed, remaining=max(0, allowed - count), reset=max(1, reset))
