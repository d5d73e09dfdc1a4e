"""Server-Sent Events: a job's or a batch's status as a stream, one event per change.

Each event is ``event: status``, ``id: <n>`` (increasing; a client reconnecting with
``Last-Event-ID: n`` gets ``n + 1`` onwards, starting with the status as it is then) and ``data:``
the status JSON. A comment line keeps idle connections open; the stream ends after the final state.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

KEEP_ALIVE = 15.0  # seconds between comments on a quiet stream (proxies close idle connections)
MEDIA_TYPE = "text/event-stream"
# next_change(seconds) → (status JSON, finished) once it changed, or after ``seconds``
NextChange = Callable[[float], Awaitable[tuple[dict[str, Any], bool]]]


def last_event_id(request: Request) -> int:
    """The ``Last-Event-ID`` a reconnecting client sent (0 for none or one we did not write)."""
    text = request.headers.get("last-event-id", "").strip()
    return int(text) if text.isdigit() and len(text) <= 12 else 0


def event(number: int, status: dict[str, Any]) -> bytes:
    return f"id: {number}\nevent: status\ndata: {json.dumps(status, separators=(',', ':'))}\n\n".encode()


def stream(request: Request, first: tuple[dict[str, Any], bool], next_change: NextChange) -> StreamingResponse:
    """The event stream, from the status read before it opened (so that a 404 or 503 comes as such)."""

    async def events() -> AsyncIterator[bytes]:
        number = last_event_id(request) + 1
        status, finished = first
        yield event(number, status)
        while not finished:
            if request.app.state.stopping() or await request.is_disconnected():
                return
            current, finished = await next_change(KEEP_ALIVE)
            if current == status and not finished:
                yield b": keep-alive\n\n"
                continue
            number += 1
            status = current
            yield event(number, status)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: pass each event on at once
    return StreamingResponse(events(), media_type=MEDIA_TYPE, headers=headers)


def changes_by_polling(read: Callable[[], Awaitable[tuple[dict[str, Any], bool]]], every: float = 0.25) -> NextChange:
    """A ``NextChange`` for what has no notification of its own (a batch): re-read every ``every`` s."""
    last: list[dict[str, Any]] = []

    async def next_change(seconds: float) -> tuple[dict[str, Any], bool]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            current, finished = await read()
            if finished or not last or current != last[0] or loop.time() >= deadline:
                last[:] = [current]
                return current, finished
            await asyncio.sleep(every)

    return next_change
