"""Long polling (``?wait=``): answer at a job's next change, woken by Celery's pub/sub messages."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable

import redis.asyncio

from jobs.status import JobStatus

WAIT_MAX = 30.0  # seconds a status request may wait for a change (?wait=)
RECHECK = 0.5  # while waiting, what is not published (queue position, a cancel) is re-read this often
WAITERS_MAX = 1000  # waiting requests per web process; beyond, answers come at once
CONFIRM_TIMEOUT = 1.0  # seconds a subscription may take to be confirmed before a request stops waiting

Gone = Callable[[], Awaitable[bool]]
LOST = b""  # put in a waiter's inbox when the shared connection dropped: read the status yourself


class Subscriber:
    """One pub/sub connection per event loop, shared by every waiting request. A request waits on its
    job's channel (the key Celery publishes each state on); a reader task hands each message to the
    requests waiting on that channel. A connection per request would cost each one a connect and
    its handshake."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self.pubsub = client.pubsub()
        self.inboxes: dict[str, set[asyncio.Queue[bytes]]] = {}
        self.confirmations: dict[str, asyncio.Future[None]] = {}
        self.reader: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def listening(self, channel: str) -> AsyncIterator[asyncio.Queue[bytes]]:
        """An inbox for ``channel``'s messages, from the moment the subscription is confirmed (so
        nothing published after the block starts is missed). Redis errors surface as they are."""
        inbox: asyncio.Queue[bytes] = asyncio.Queue()
        inboxes = self.inboxes.setdefault(channel, set())
        inboxes.add(inbox)
        try:
            if len(inboxes) == 1:  # the first waiter on this job subscribes
                self.confirmations[channel] = asyncio.get_running_loop().create_future()
                await self.pubsub.subscribe(channel)
                if self.reader is None or self.reader.done():
                    self.reader = asyncio.create_task(self._read())
            confirmed = self.confirmations.get(channel)
            if confirmed is not None:
                await asyncio.wait_for(asyncio.shield(confirmed), CONFIRM_TIMEOUT)
            yield inbox
        finally:
            inboxes.discard(inbox)
            if not inboxes and self.inboxes.get(channel) is inboxes:
                del self.inboxes[channel]
                self.confirmations.pop(channel, None)
                with contextlib.suppress(redis.exceptions.RedisError, OSError, RuntimeError):
                    await self.pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        try:
            while self.inboxes:
                message = await self.pubsub.get_message(timeout=RECHECK)
                if message is None:
                    continue
                channel = message["channel"].decode()
                if message["type"] == "subscribe":
                    confirmed = self.confirmations.pop(channel, None)
                    if confirmed is not None and not confirmed.done():
                        confirmed.set_result(None)
                elif message["type"] == "message":
                    for inbox in self.inboxes.get(channel, ()):
                        inbox.put_nowait(message["data"])
        except (redis.exceptions.RedisError, OSError, RuntimeError) as exc:
            self._drop(exc)

    def _drop(self, exc: BaseException) -> None:
        """The connection dropped: every waiter reads its status itself; the next one subscribes afresh."""
        for confirmed in self.confirmations.values():
            if not confirmed.done():
                confirmed.set_exception(redis.exceptions.ConnectionError(str(exc)))
        for inboxes in self.inboxes.values():
            for inbox in inboxes:
                inbox.put_nowait(LOST)
        self.inboxes, self.confirmations = {}, {}
        self.pubsub = self.client.pubsub()


class LongPoll:
    """Waits for a job's status to change. One per job client: it counts its waiters and keeps a
    :class:`Subscriber` per event loop."""

    def __init__(
        self,
        url: str,
        status: Callable[[str], JobStatus],
        meta_key: Callable[[str], object],
        published: Callable[[JobStatus, bytes], JobStatus | None] = lambda status, message: None,
    ) -> None:
        self.url, self.status, self.meta_key, self.published = url, status, meta_key, published
        self.waiters = 0
        self._subscribers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Subscriber] = (
            weakref.WeakKeyDictionary()
        )

    def _subscriber(self) -> Subscriber:
        loop = asyncio.get_running_loop()
        if loop not in self._subscribers:
            client = redis.asyncio.Redis.from_url(self.url, socket_connect_timeout=1.0, socket_timeout=None)
            self._subscribers[loop] = Subscriber(client)
        return self._subscribers[loop]

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
        return await self._wait(first, min(seconds, WAIT_MAX), gone)

    async def _wait(self, first: JobStatus, seconds: float, gone: Gone | None) -> JobStatus:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        try:
            async with self._listening(first.task_id) as inbox:
                current = await asyncio.to_thread(self.status, first.task_id)  # what changed before the subscription
                return await self._follow(current, inbox, deadline, gone, lambda now: now.looks() != first.looks())
        except (redis.exceptions.RedisError, OSError, TimeoutError):
            # No subscription (Redis slow or restarting): answer at once, as without ?wait=.
            return await asyncio.to_thread(self.status, first.task_id)

    async def ended(self, submitted: JobStatus, seconds: float, gone: Gone | None = None) -> JobStatus:
        """A single job this process has just submitted (``submitted``: the submit's status): its
        status at its end, or the latest after ``seconds``. Its id needs no reading first (it was
        just written); once subscribed, one read of its published state tells whether it has
        already ended, and its end's message needs no read at all."""
        if self.waiters >= WAITERS_MAX:
            return submitted
        deadline = asyncio.get_running_loop().time() + seconds
        try:
            async with self._listening(submitted.task_id) as inbox:
                state = self._subscriber().client.get(self._channel(submitted.task_id))
                raw = await asyncio.wait_for(state, CONFIRM_TIMEOUT)
                # Nothing published yet; or what was published; or, where that alone cannot tell, a read.
                heard = self.published(submitted, raw) if isinstance(raw, bytes) else None
                current = submitted if raw is None else heard
                if current is None:
                    current = await asyncio.to_thread(self.status, submitted.task_id)
                return await self._follow(current, inbox, deadline, gone, lambda now: False)
        except (redis.exceptions.RedisError, OSError, TimeoutError):
            return await asyncio.to_thread(self.status, submitted.task_id)

    def _channel(self, task_id: str) -> str:
        key = self.meta_key(task_id)
        return key.decode() if isinstance(key, bytes) else str(key)

    def _listening(self, task_id: str) -> contextlib.AbstractAsyncContextManager[asyncio.Queue[bytes]]:
        return self._subscriber().listening(self._channel(task_id))

    async def _follow(
        self,
        current: JobStatus,
        inbox: asyncio.Queue[bytes],
        deadline: float,
        gone: Gone | None,
        changed: Callable[[JobStatus], bool],
    ) -> JobStatus:
        """The job's status once it ends or ``changed(status)``, from its published messages (read
        afresh every RECHECK seconds and where a message alone cannot tell), or the latest at ``deadline``."""
        loop = asyncio.get_running_loop()
        self.waiters += 1
        try:
            while not current.finished and not changed(current):
                remaining = deadline - loop.time()
                if remaining <= 0 or (gone is not None and await gone()):
                    break
                try:
                    message = await asyncio.wait_for(inbox.get(), min(remaining, RECHECK))
                except TimeoutError:
                    message = LOST
                heard = self.published(current, message) if message != LOST else None
                current = heard if heard is not None else await asyncio.to_thread(self.status, current.task_id)
            return current  # the latest read: at most RECHECK seconds old
        finally:
            self.waiters -= 1
