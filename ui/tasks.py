"""Tasks: look any job up by its id (from a reload, another device or a script), and this browser's recent jobs."""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from jobs import JobConflict, JobNotFound, ServiceUnavailable, get_client
from ui.common import error, save_result, unreachable

RECENT = 20


def _task_id(task_id: str) -> str:
    task_id = (task_id or "").strip()[:100]  # ids are 36 characters; never echo a flood back
    if not task_id:
        raise error("Enter a task id.", title="Invalid input")
    return task_id


def _not_found(task_id: str) -> gr.Error:
    return error(f"Task not found: {task_id} is unknown or expired.", title="Not found")


def task_status(task_id: str) -> dict[str, Any]:
    """A job's status, as GET /api/v1/tasks/{id}/status/ gives it."""
    task_id = _task_id(task_id)
    try:
        return get_client().status(task_id).as_dict()
    except JobNotFound:
        raise _not_found(task_id) from None
    except ServiceUnavailable:
        raise unreachable() from None


def task_result(task_id: str) -> str:
    """A finished job's image."""
    task_id = _task_id(task_id)
    try:
        return save_result(task_id)
    except JobNotFound:
        raise _not_found(task_id) from None
    except ServiceUnavailable:
        raise unreachable() from None
    except JobConflict as exc:
        raise error(f"No result: the task is {exc.status.status} ({exc.status.message}).", title="Not ready") from None


def cancel_task(task_id: str) -> dict[str, Any]:
    """Cancel a queued or running job; its status afterwards."""
    task_id = _task_id(task_id)
    try:
        return get_client().cancel(task_id).as_dict()
    except JobNotFound:
        raise _not_found(task_id) from None
    except ServiceUnavailable:
        raise unreachable() from None
    except JobConflict as exc:
        raise error(
            f"Task already finished ({exc.status.status}); nothing to cancel, its result is kept.", title="Finished"
        ) from None


def remember(task_id: str, task_type: str, recent: list[list[str]] | None) -> tuple[list[list[str]], list[list[str]]]:
    recent = [row for row in (recent or []) if row and row[0] != task_id]
    if task_id:
        recent.insert(0, [task_id, task_type, time.strftime("%H:%M:%S")])
    recent = recent[:RECENT]
    return recent, recent


def render(recent: gr.BrowserState) -> gr.Dataframe:
    with gr.Row():
        task_id = gr.Textbox(label="Task id", placeholder="Paste a task id", scale=4, elem_id="lookup-id")
        status_button = gr.Button("Status", variant="primary", scale=1)
        result_button = gr.Button("Result", scale=1)
        cancel_button = gr.Button("Cancel", variant="stop", scale=1)
    with gr.Row():
        status = gr.JSON(label="Status")
        result = gr.Image(
            label="Result", type="filepath", format="png", interactive=False, buttons=["download", "fullscreen"]
        )
    table = gr.Dataframe(
        headers=["Task id", "Operation", "Submitted"],
        label="Recent jobs in this browser",
        interactive=False,
        wrap=True,
    )
    status_button.click(task_status, task_id, status, api_name="task_status", concurrency_limit=None)
    result_button.click(task_result, task_id, result, api_name="task_result", concurrency_limit=None)
    cancel_button.click(cancel_task, task_id, status, api_name="cancel_task", concurrency_limit=None)

    def pick(rows: Any, event: gr.SelectData) -> str:
        return str(event.row_value[0]) if event.row_value else ""

    table.select(pick, table, task_id, api_visibility="private").then(
        task_status, task_id, status, api_visibility="private"
    )
    return table
