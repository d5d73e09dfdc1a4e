"""The studio page: a header with the workers' state, one tab per operation, and a Tasks tab."""

from __future__ import annotations

import gradio as gr

from jobs import get_client, operations_by_queue
from settings import get_settings
from ui import background, batch_api, face_swap, generate, object_removal, style, tasks

THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="slate", radius_size="md")
CSS = """
.tab-wrapper, .tab-container { flex-wrap: nowrap; overflow-x: auto; }
.checkerboard .result img, .checkerboard .result canvas, .checkerboard .batch-gallery img {
  background-color: #fff;
  background-image: conic-gradient(#d6d6d6 25%, #fff 0 50%, #d6d6d6 0 75%, #fff 0);
  background-size: 20px 20px;
}
.atelier-banner {
  border-left: 4px solid #d97706; padding: 6px 12px; background: rgba(217, 119, 6, 0.12); border-radius: 6px;
}
footer { display: none !important; }
"""
TABS = [
    ("Generate", "image_generation", generate.render),
    ("Face swap", "face_swap", face_swap.render),
    ("Remove background", "background_removal", background.render),
    ("Remove object", "object_removal", object_removal.render),
    ("Style transfer", "style_transfer", style.render),
]


def header() -> str:
    """Workers alive and jobs waiting per queue, with a banner for a queue nobody serves."""
    try:
        health = get_client().health()
    except Exception:
        return (
            "<div class='atelier-banner'>Redis is unreachable: jobs cannot be submitted or followed right now. "
            "The page recovers by itself once it is back.</div>"
        )
    parts, banners = [], []
    served = operations_by_queue()
    for queue, info in health["queues"].items():
        workers = len(info["workers"])
        parts.append(f"<b>{queue}</b>: {workers} worker{'s' if workers != 1 else ''}, {info['waiting']} waiting")
        if not workers and served[queue]:
            banners.append(
                f"<div class='atelier-banner'>No {queue.upper()} worker is running: "
                f"{', '.join(served[queue])} will wait.</div>"
            )
    return "<div class='atelier-health'>" + " · ".join(parts) + "</div>" + "".join(banners)


def build_ui() -> gr.Blocks:
    """The Gradio Blocks app that app.py mounts at ``/``."""
    ttl = get_settings().result_ttl  # Gradio's copies of uploads and results go with the jobs
    demo = gr.Blocks(title="Atelier", delete_cache=(min(ttl, 3600), ttl))  # not `as`: __enter__ is untyped
    with demo:
        with gr.Row(equal_height=True):
            gr.Markdown("# Atelier\nAn AI image studio · [REST API](/docs)")
            status = gr.HTML(elem_id="atelier-header")
        recent = gr.BrowserState([], storage_key="atelier-recent-jobs")
        rendered = {}
        with gr.Tabs():
            for title, task_type, render in TABS:
                with gr.Tab(title, id=task_type, elem_id=f"tab-{task_type}"):
                    rendered[task_type] = render()
            with gr.Tab("Tasks", id="tasks", elem_id="tab-tasks"):
                table = tasks.render(recent)
        batch_api.render()
        for task_type, (box, batch) in rendered.items():
            box.change(
                lambda task_id, rows, task_type=task_type: tasks.remember(task_id, task_type, rows),
                [box, recent],
                [recent, table],
                api_visibility="private",
            )
            batch.batch_id.change(
                lambda batch_id, total, rows, task_type=task_type: tasks.remember(
                    batch_id, tasks.batch_label(task_type, total), rows
                ),
                [batch.batch_id, batch.total, recent],
                [recent, table],
                api_visibility="private",
            )
        demo.load(lambda rows: rows or [], recent, table, api_visibility="private")
        demo.load(header, None, status, api_visibility="private")
        gr.Timer(3).tick(header, None, status, api_visibility="private")
    demo.queue(default_concurrency_limit=None)
    return demo
