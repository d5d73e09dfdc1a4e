"""Long polling (``?wait=``): answer at a job's next change, woken by Celery's pub/sub messages."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable

import redis.asyncio

from jobs.status import JobStatus

WAIT_MAX = 30.0  # seconds a status request may wait for a change (?wait=)
RECHECK = 0.5  # while waiting, what is not published (queue position, a cancel) is re-read this often
WAITERS_MAX = 1000  # waiting requests per web process (a Redis connection each); beyond, answers come at once

Gone = Callable[[], Awaitable[bool]]


class LongPoll:
    """Waits for a job's status to change. One per job client: it counts its waiters and keeps an
    asyncio Redis client per event loop (a connection per waiting request)."""

    def __init__(self, url: str, status: Callable[[str], JobStatus], meta_key: Callable[[str], object]) -> None:
        self.url, self.status, self.meta_key = url, status, meta_key
        self.waiters = 0
        self._listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
            weakref.WeakKeyDictionary()
        )

    def _listener(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        if loop not in self._listeners:
            self._listeners[loop] = redis.asyncio.Redis.from_url(
                self.url, socket_connect_timeout=2.0, socket_timeout=1.0, max_connections=WAITERS_MAX
            )
        return self._listeners[loop]

    async def watch(self, task_id: str, seconds: float, gone: Gone | None = None) -> JobStatus:
        """The job's status once it differs from now, or once ``seconds`` have passed.

        Celery's Redis backend publishes every state it stores on the job's key (progress, the end),
        so a waiting client hears of it at once instead of at its next poll. What is not published
        (the queue position, a cancel) is re-read every ``RECHECK`` seconds, and so is ``gone()``:
        a client that left, or a server shutting down, ends the wait.
        """
        # Read first: an unknown id is a 404 and an unreachable Redis a 503 at once (within the
        # client's 1 s timeout), before a listener waits for its connection.
        first = await asyncio.to_thread(self.status, task_id)
        if first.finished or self.waiters >= WAITERS_MAX:
            return first
        self.waiters += 1
        try:
            return await self._wait(first, min(seconds, WAIT_MAX), gone)
        finally:
            self.waiters -= 1

    async def _wait(self, first: JobStatus, seconds: float, gone: Gone | None) -> JobStatus:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        async with self._listener().pubsub() as pubsub:
            try:
                await pubsub.subscribe(self.meta_key(first.task_id))
                await pubsub.get_message(timeout=1.0)  # its confirmation: from now on nothing published is missed
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                # No listener (a burst of connections, Redis slow): answer at once, as without ?wait=.
                return await asyncio.to_thread(self.status, first.task_id)
            current = await asyncio.to_thread(self.status, first.task_id)  # what changed before the subscription
            while not current.finished and current.looks() == first.looks():
                remaining = deadline - loop.time()
                if remaining <= 0 or (gone is not None and await gone()):
                    break
                try:
                    await pubsub.get_message(timeout=min(remaining, RECHECK))
                except redis.exceptions.ConnectionError:
                    break  # the listener's connection dropped: answer with the last read
                current = await asyncio.to_thread(self.status, first.task_id)
            return current  # the latest read: at most RECHECK seconds old
