"""Tasks: the caller's jobs (kept by the server, see ui/history.py), looking a job or batch up by its
id (from a reload, another device or a script), and this browser's recent jobs and batches. With
access control on, another user's id answers as an unknown one."""

from __future__ import annotations

import html
import time
from typing import Any

import gradio as gr

from jobs import (
    BatchNotFound,
    BatchStatus,
    JobConflict,
    JobNotFound,
    JobState,
    JobStatus,
    ServiceUnavailable,
    get_client,
)
from ui import history
from ui.batch import FAILURES_SHOWN, answering, cancel_unfinished, save_archive
from ui.common import caller, error, result_image, save_result, unreachable

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
        client = get_client()
        return client.status(task_id, caller(client)).as_dict()
    except JobNotFound:
        raise _not_found(task_id) from None
    except ServiceUnavailable:
        raise unreachable() from None


def task_result(task_id: str) -> str:
    """A finished job's image."""
    task_id = _task_id(task_id)
    try:
        return save_result(task_id, caller(get_client()))
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
        client = get_client()
        return client.cancel(task_id, caller(client)).as_dict()
    except JobNotFound:
        raise _not_found(task_id) from None
    except ServiceUnavailable:
        raise unreachable() from None
    except JobConflict as exc:
        raise error(
            f"Task already finished ({exc.status.status}); nothing to cancel, its result is kept.", title="Finished"
        ) from None


def _find(task_id: str) -> JobStatus | BatchStatus:
    """The job with this id, else the batch: the Tasks tab's buttons take either."""
    client = get_client()
    who = caller(client)  # another owner's job or batch is as unknown as an id never issued
    try:
        try:
            return client.status(task_id, who)
        except JobNotFound:
            return client.batch_status(task_id, who)
    except BatchNotFound:
        raise error(
            f"Task not found: {task_id} is no task or batch known here (unknown or expired).", title="Not found"
        ) from None
    except ServiceUnavailable:
        raise unreachable() from None


def look_up(task_id: str) -> str:
    """The Status button: a job's status, or a batch's, as a person reads it."""
    return summary(_find(_task_id(task_id)))


def summary(found: JobStatus | BatchStatus) -> str:
    """A status as a short table: the operation's title, the state in words, progress and message."""
    title = history.operation_title({"task_type": found.task_type})
    rows = [("Operation", title), ("Status", history.status_word(found.status)), ("Progress", f"{found.progress} %")]
    if isinstance(found, BatchStatus):
        rows = [("Batch", f"{found.total} item{'s' if found.total != 1 else ''}"), *rows]
        rows.append(("Items", found.message))
        failed = [item for item in found.items if item.status == JobState.FAILURE][:FAILURES_SHOWN]
        rows += [(f"Failed: {item.name or item.task_id}", item.message) for item in failed]
        key = "Batch id"
    else:
        rows.append(("Message", found.message))
        if found.position is not None:
            rows.append(("Place in the queue", str(found.position)))
        key = "Task id"
    rows.append((key, found.task_id if isinstance(found, JobStatus) else found.batch_id))
    cells = "\n".join(
        f"| {name} | {html.escape(str(value), quote=False).replace('|', '&#124;')} |" for name, value in rows
    )
    return "| | |\n|---|---|\n" + cells


def look_up_result(task_id: str) -> tuple[str | None, str | None]:
    """The Result button: a job's image, or a batch's zip."""
    task_id = _task_id(task_id)
    if isinstance(_find(task_id), JobStatus):
        return task_result(task_id), None
    with answering(task_id):
        return None, save_archive(task_id, caller(get_client()))


def cancel_any(task_id: str) -> str:
    """The Cancel button: a job, or every unfinished item of a batch; the status afterwards."""
    task_id = _task_id(task_id)
    if isinstance(_find(task_id), JobStatus):
        cancel_task(task_id)
        return look_up(task_id)
    with answering(task_id):
        return summary(cancel_unfinished(task_id, caller(get_client())))


def batch_label(task_type: str, total: float | None) -> str:
    """How a batch shows in the recent list, in the Operation column: "Style transfer · batch of 12 items"."""
    count = int(total or 0)
    return f"{history.operation_title({'task_type': task_type})} · batch of {count} item{'s' if count != 1 else ''}"


def remember(task_id: str, task_type: str, recent: list[list[str]] | None) -> tuple[list[list[str]], list[list[str]]]:
    """Put a job (or a batch: ``task_type`` is then its ``batch_label``) at the top of the recent list,
    under its operation's title."""
    recent = [row for row in (recent or []) if row and row[0] != task_id]
    if task_id:
        recent.insert(0, [task_id, history.operation_title({"task_type": task_type}), time.strftime("%H:%M:%S")])
    recent = recent[:RECENT]
    return recent, recent


def render(recent: gr.BrowserState, tab: gr.Tab | None = None) -> gr.Dataframe:
    mine = history.render(tab)
    with gr.Row():
        task_id = gr.Textbox(
            label="Task or batch id", placeholder="Paste a task id or a batch id", scale=4, elem_id="lookup-id"
        )
        status_button = gr.Button("Status", variant="primary", scale=1)
        result_button = gr.Button("Result", scale=1)
        cancel_button = gr.Button("Cancel", variant="stop", scale=1)
    status = gr.JSON(label="Status", visible=False)  # the task_status and cancel_task endpoints' output
    with gr.Row():
        shown = gr.Markdown(elem_id="lookup-status", container=True, min_height=120)
        with gr.Column():
            result = result_image(elem_id="lookup-result")
            archive = gr.File(label="Batch results (zip)", interactive=False, elem_id="lookup-zip")
    table = gr.Dataframe(
        headers=["Task or batch id", "Operation", "Submitted"],
        label="Recent jobs and batches submitted from this browser",
        elem_id="recent-jobs",
        interactive=False,
        wrap=True,
    )
    # The buttons take either kind of id; the Gradio API has one endpoint per kind (batch_status
    # and the rest are in ui/batch_api.py), on a hidden button with the same inputs and outputs.
    status_button.click(look_up, task_id, shown, api_visibility="private", concurrency_limit=None)
    result_button.click(look_up_result, task_id, [result, archive], api_visibility="private", concurrency_limit=None)
    cancel_button.click(cancel_any, task_id, shown, api_visibility="private", concurrency_limit=None)
    api = gr.Button(visible=False)
    api.click(task_status, task_id, status, api_name="task_status", concurrency_limit=None)
    api.click(task_result, task_id, result, api_name="task_result", concurrency_limit=None)
    api.click(cancel_task, task_id, status, api_name="cancel_task", concurrency_limit=None)

    def pick(rows: Any, event: gr.SelectData) -> str:
        return str(event.row_value[0]) if event.row_value else ""

    for rows in (table, mine.table):
        rows.select(pick, rows, task_id, api_visibility="private").then(
            look_up, task_id, shown, api_visibility="private"
        )

    def pick_picture(shown: list[str], event: gr.SelectData) -> str:
        index = event.index if isinstance(event.index, int) else -1
        return shown[index] if 0 <= index < len(shown) else ""

    mine.gallery.select(pick_picture, mine.shown, task_id, api_visibility="private").then(
        look_up, task_id, shown, api_visibility="private"
    )
    return table
