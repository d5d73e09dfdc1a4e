"""A job's message written in the submit's transaction is the message Celery's ``send_task`` sends."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from settings import Settings
from tasks.celery_app import TASK_NAME, make_celery
from tasks.messages import TaskMessages

QUEUE = "messages-test"  # no worker consumes it


def popped(redis_client: Any, key: str) -> dict[str, Any]:
    raw = redis_client.rpop(key)
    assert raw is not None, f"nothing was pushed on {key!r}"
    message: dict[str, Any] = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    del message["properties"]["delivery_tag"]  # a new uuid for every message
    return message


@pytest.mark.parametrize("priority", [None, 0, 1, 3, 9])
def test_the_message_and_its_list_are_send_tasks(redis_client: Any, redis_url: str, priority: int | None) -> None:
    celery = make_celery(Settings(redis_url=redis_url))
    messages = TaskMessages(celery)
    kwargs = {"task_type": "object_removal", "parameters": {"engine": "telea", "radius": 3}, "prompt": None}
    key = messages.list_for(QUEUE, priority)
    redis_client.delete(key)

    job_id = str(uuid.uuid4())
    celery.send_task(TASK_NAME, kwargs=kwargs, task_id=job_id, queue=QUEUE, priority=priority)
    sent = popped(redis_client, key)
    pipe = redis_client.pipeline(transaction=True)
    messages.write(pipe, job_id, kwargs, QUEUE, priority)
    pipe.execute()
    written = popped(redis_client, key)

    assert written == sent
    assert redis_client.llen(key) == 0
    assert key == (QUEUE if not priority else f"{QUEUE}\x06\x16{priority}")
