"""Teams: who a job belongs to, who may see it, each owner's history and active-jobs cap.

With access control on (ATELIER_AUTH or ATELIER_API_TOKENS), every job, chain and batch belongs to
the user or token that submitted it; to anyone else its id is unknown (the same 404 as a
never-issued id). Names in ATELIER_ADMINS see and cancel everything. Without access control the
studio is one person's: every caller sees every job.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from jobs.errors import RateLimited, redis_reachable
from jobs.limits import RateWindow, requester
from settings import Settings
from tasks.store import PREFIX, JobStore, chain_key, job_key

HISTORY = f"{PREFIX}:history"  # every job, chain and batch item by submit time (what admins list)
MAX_LIST = 200  # entries per page of a history list


def history_key(owner: str) -> str:
    return f"{HISTORY}:{owner}"


def active_key(owner: str) -> str:
    return f"{PREFIX}:active:{owner}"


@dataclass(frozen=True)
class Caller:
    """Who asks: the owner their jobs get ("user:alice", "token:ci", "ip:10.0.0.7"), whether they are
    an admin, and whether owners are enforced at all (access control on)."""

    owner: str
    admin: bool = False
    enforced: bool = False

    def may_see(self, owner: str | None) -> bool:
        return not self.enforced or self.admin or owner == self.owner

    @property
    def sees_all(self) -> bool:
        return not self.enforced or self.admin


def caller_of(user: str | None, headers: Mapping[str, str], peer: str | None, settings: Settings) -> Caller:
    """The caller of a request: ``user`` is what the auth middleware checked (``access.checked_user``)."""
    owner = requester(user, headers, peer, settings)
    kind, _, name = owner.partition(":")
    admin = settings.access_control and kind in ("user", "token") and name in settings.admin_names
    return Caller(owner, admin, settings.access_control)


@dataclass(frozen=True)
class Usage:
    """An owner's numbers as the page's header shows them: jobs running and waiting, and the rate
    limit's window (None without ATELIER_RATE_LIMIT)."""

    running: int
    waiting: int
    window: RateWindow | None = None


class Owners:
    """Owners in Redis: the owner of an id, each owner's history (and everyone's), active jobs."""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store, self.settings = store, settings

    def owner_of(self, task_id: str) -> str | None:
        """The owner of a job or chain (one round trip, whichever it is)."""
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.hget(job_key(task_id), "owner")
        pipe.hget(chain_key(task_id), "owner")
        found = next((value for value in pipe.execute() if value is not None), None)
        return found.decode() if found is not None else None

    def record(self, pipe: Any, owner: str | None, item_ids: list[str], active_ids: list[str]) -> None:
        """Add to ``pipe``: new items in their owner's history and everyone's, and the jobs whose end
        makes them no longer active (a chain's last step) in the owner's active set."""
        now = time.time()
        entries = {item_id: now + index * 1e-6 for index, item_id in enumerate(item_ids)}  # newest last
        for key in [HISTORY, *([history_key(owner)] if owner else [])]:
            pipe.zadd(key, entries)
            pipe.zremrangebyscore(key, "-inf", now - self.store.ttl)
            pipe.expire(key, self.store.ttl)
        if owner:
            pipe.zadd(active_key(owner), dict.fromkeys(active_ids, now))
            pipe.expire(active_key(owner), self.store.ttl)

    def active(self, owner: str) -> int:
        """The owner's queued and running jobs (the ended and expired ones are forgotten here)."""
        return len(self._live(owner))

    def running_and_waiting(self, owner: str) -> tuple[int, int]:
        """How many of the owner's active jobs run now, and how many wait (two round trips: the
        page's header asks every few seconds)."""
        live = self._live(owner)
        running = sum(live)
        return running, len(live) - running

    def _live(self, owner: str) -> list[bool]:
        """Whether each of the owner's active jobs has started (the ended and expired ones are dropped)."""
        ids = [raw.decode() for raw in cast(list[bytes], self.store.redis.zrange(active_key(owner), 0, -1))]
        if not ids:
            return []
        pipe = self.store.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(job_key(job_id), "task_type", "outcome", "started")
        ended, live = [], []
        for job_id, (kind, outcome, started) in zip(ids, pipe.execute(), strict=True):
            if not kind or outcome:
                ended.append(job_id)
            else:
                live.append(started is not None)
        if ended:
            self.store.redis.zrem(active_key(owner), *ended)
        return live

    def admit(self, owner: str | None, adding: int) -> None:
        """:class:`TooManyActive` when ``adding`` jobs would take ``owner`` past ATELIER_MAX_ACTIVE_PER_USER."""
        cap = self.settings.max_active_per_user
        if cap is None or owner is None:
            return
        with redis_reachable():
            active = self.active(owner)
        if active + adding > cap:
            name = owner.partition(":")[2] or owner
            asked = f"; this submission adds {adding}" if adding > 1 else ""
            raise TooManyActive(
                f"{name} has {active} queued or running jobs{asked}; the limit is {cap} (ATELIER_MAX_ACTIVE_PER_USER). "
                "Wait for some to finish, or cancel some."
            )

    def page(self, caller: Caller, limit: int, cursor: str | None) -> tuple[list[tuple[str, float]], str | None]:
        """One page of the caller's history, newest first: (id, submit time) and the next page's cursor."""
        key = HISTORY if caller.sees_all else history_key(caller.owner)
        top, after = ("+inf", None) if cursor is None else decode_cursor(cursor)
        with redis_reachable():
            raw = self.store.redis.zrevrangebyscore(key, top, "-inf", start=0, num=limit + 1 + (1 if after else 0),
                                                    withscores=True)  # fmt: skip
        entries = [(member.decode(), score) for member, score in cast(list[tuple[bytes, float]], raw)]
        if after is not None:
            entries = [(item, score) for item, score in entries if (score, item) < after]
        page, more = entries[:limit], len(entries) > limit
        return page, (encode_cursor(*page[-1]) if more and page else None)


class TooManyActive(RateLimited):
    """Over ATELIER_MAX_ACTIVE_PER_USER: a 429 that waiting (or cancelling) cures."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=5)


def encode_cursor(item_id: str, score: float) -> str:
    return base64.urlsafe_b64encode(json.dumps([score, item_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, tuple[float, str]]:
    """(the highest score to read from, the (score, id) the page must come after); ValueError if bad."""
    try:
        score, item_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return repr(float(score)), (float(score), str(item_id))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ValueError("cursor is not one this API gave out") from exc
