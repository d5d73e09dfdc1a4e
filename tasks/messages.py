"""A job's Celery message, written in the same Redis transaction as its record.

``send_task`` publishes through kombu after the submit's own transaction: one more round trip and
about half a millisecond of the web process's CPU a job, and a moment in which the job's record
exists without its message (the reconciler's to repair, should the web process die there). Here
the message is built as ``send_task`` builds it (Celery's own ``as_task_v2``) and queued as kombu's
Redis transport queues it: a JSON envelope, its body base64, pushed on the queue's list for its
priority (``cpu``, ``cpu\\x06\\x163`` for priority 3...), which the workers pop from as from any
other. tests/tasks/test_messages.py holds it to what ``send_task`` writes.
"""

from __future__ import annotations

import base64
import bisect
import json
import uuid
from typing import Any

from celery import Celery
from kombu.serialization import dumps

from tasks.celery_app import TASK_NAME

PERSISTENT = 2  # kombu's delivery_mode for a durable queue's messages
MAX_PRIORITY = 9  # kombu's Redis transport: priorities 0-9


class TaskMessages:
    """Writes Atelier's task messages into a Redis pipeline."""

    def __init__(self, celery: Celery) -> None:
        self.celery = celery
        options = celery.conf.broker_transport_options or {}
        self.separator: str = options.get("sep", "\x06\x16")
        self.steps: list[int] = sorted(options.get("priority_steps", [0, 3, 6, 9]))

    def list_for(self, queue: str, priority: int | None) -> str:
        """The Redis list a message of ``priority`` waits in on ``queue`` (kombu's ``_q_for_pri``)."""
        level = max(0, min(priority or 0, MAX_PRIORITY))
        step = self.steps[bisect.bisect(self.steps, level) - 1]
        return f"{queue}{self.separator}{step}" if step else queue

    def envelope(self, job_id: str, kwargs: dict[str, Any], queue: str, priority: int | None) -> str:
        """The message ``send_task(TASK_NAME, kwargs=kwargs, task_id=job_id, queue=queue,
        priority=priority)`` would push, as JSON."""
        message = self.celery.amqp.as_task_v2(job_id, TASK_NAME, kwargs=kwargs, ignore_result=None)
        content_type, encoding, body = dumps(message.body, serializer="json")  # type: ignore[no-untyped-call]
        raw = body.encode() if isinstance(body, str) else body
        properties = {
            **message.properties,
            "reply_to": self.celery.thread_oid,
            "delivery_mode": PERSISTENT,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": priority or 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        }
        return json.dumps(
            {
                "body": base64.b64encode(raw).decode(),
                "content-encoding": encoding,
                "content-type": content_type,
                "headers": message.headers,
                "properties": properties,
            }
        )

    def write(self, pipe: Any, job_id: str, kwargs: dict[str, Any], queue: str, priority: int | None) -> None:
        """Queue the job's message as part of ``pipe`` (a transaction: with the job's record, or not at all)."""
        pipe.lpush(self.list_for(queue, priority), self.envelope(job_id, kwargs, queue, priority))
