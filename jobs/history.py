"""A caller's history: their jobs, chains and batch items within the TTL, newest first, by cursor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobs.errors import JobNotFound, redis_reachable
from tasks.store import chain_key, job_key

if TYPE_CHECKING:
    from jobs.client import JobClient
    from jobs.owners import Caller


def list_history(
    client: JobClient, caller: Caller, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of ``caller``'s history and the next page's cursor (None on the last page)."""
    page, next_cursor = client.owners.page(caller, limit, cursor)
    with redis_reachable():
        pipe = client.store.redis.pipeline(transaction=False)
        for item_id, _ in page:
            pipe.hget(job_key(item_id), "batch")
            pipe.hget(chain_key(item_id), "batch")
        answers = pipe.execute()
    tasks = []
    for index, (item_id, created) in enumerate(page):
        try:
            status = client.tracker.status(item_id)
        except JobNotFound:  # expired since it was listed
            continue
        entry: dict[str, Any] = {
            "task_id": item_id,
            "task_type": status.task_type,
            "status": status.status,
            "created_at": round(created, 3),
            "message": status.message,
            "progress": status.progress,
        }
        batch = answers[2 * index] or answers[2 * index + 1]
        if batch is not None:
            entry["batch_id"] = batch.decode()
        if status.steps:
            entry["steps"] = len(status.steps)
        tasks.append(entry)
    return tasks, next_cursor
