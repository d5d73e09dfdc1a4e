"""A minimal page for now: what Atelier serves, the stack's health, and a task lookup.

The five operation tabs come with the studio-page issue.
"""

from __future__ import annotations

import io
from typing import Any

import gradio as gr
from PIL import Image

from jobs import JobConflict, JobNotFound, get_client

INTRO = """
# Atelier
An AI image studio. Jobs run on Celery workers; this page and the REST API share them.
Submit with `POST /api/v1/tasks/submit/` ([API docs](/docs)); follow a job below by its id.
"""


def health_markdown() -> str:
    try:
        health = get_client().health()
    except Exception as exc:
        return f"**Redis is unreachable** — jobs cannot be submitted right now ({exc})."
    lines = []
    for queue, info in health["queues"].items():
        workers = len(info["workers"])
        state = f"{workers} worker{'s' if workers != 1 else ''}" if workers else f"**no {queue} worker is running**"
        lines.append(f"`{queue}`: {state}, {info['waiting']} waiting")
    return " · ".join(lines)


def look_up(task_id: str) -> tuple[dict[str, Any], Image.Image | None]:
    task_id = task_id.strip()
    if not task_id:
        return {"error": "Enter a task id"}, None
    client = get_client()
    try:
        status = client.status(task_id)
        if status.status != "SUCCESS":
            return status.as_dict(), None
        _, _, png = client.result(task_id)
    except JobNotFound:
        return {"error": "Task not found", "task_id": task_id}, None
    except JobConflict as exc:
        return exc.status.as_dict(), None
    return status.as_dict(), Image.open(io.BytesIO(png))


def cancel(task_id: str) -> dict[str, Any]:
    try:
        return get_client().cancel(task_id.strip()).as_dict()
    except JobNotFound:
        return {"error": "Task not found", "task_id": task_id}
    except JobConflict as exc:
        return {"error": str(exc), **exc.status.as_dict()}


def build_ui() -> gr.Blocks:
    """The Gradio Blocks app mounted at ``/``."""
    with gr.Blocks(title="Atelier") as demo:
        gr.Markdown(INTRO)
        health = gr.Markdown(health_markdown)
        with gr.Row():
            task_id = gr.Textbox(label="Task id", placeholder="e.g. 3f2c…", scale=4)
            look = gr.Button("Look up", variant="primary", scale=1)
            stop = gr.Button("Cancel", variant="stop", scale=1)
        with gr.Row():
            status = gr.JSON(label="Status")
            image = gr.Image(label="Result", type="pil", format="png")
        look.click(look_up, task_id, [status, image], api_visibility="private")
        stop.click(cancel, task_id, status, api_visibility="private")
        gr.Timer(5).tick(health_markdown, None, health, api_visibility="private")
    return demo
