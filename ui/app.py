"""The studio page: a header with the workers' state, one tab per operation, and a Tasks tab."""

from __future__ import annotations

import html

import gradio as gr

from jobs import JobClient, get_client, operations_by_queue
from settings import get_settings
from ui import background, batch_api, face_swap, generate, history, models, object_removal, png_info, style, tasks
from ui.chain import Rendered, wire_sending
from ui.common import caller

THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="slate", radius_size="md")
CSS = """
.tab-wrapper, .tab-container { flex-wrap: nowrap; overflow-x: auto; }
/* On a phone every tab stays in sight: Gradio puts the tabs it measures as not fitting behind "⋯";
   here they are measured as tiny (so none is) and the bar wraps onto a second line instead. */
@media (max-width: 720px) {
  #studio-tabs > .tab-wrapper { height: auto; padding-bottom: 2px; }
  #studio-tabs > .tab-wrapper > .tab-container.visually-hidden button {
    font-size: 1px !important; padding: 0 !important; min-width: 0 !important; width: 1px !important;
  }
  #studio-tabs > .tab-wrapper > .tab-container[role=tablist] { flex-wrap: wrap; height: auto; overflow: visible; }
  #studio-tabs > .tab-wrapper > .tab-container[role=tablist] > button { padding: 6px 9px; font-size: var(--text-sm); }
  #studio-tabs .overflow-menu { display: none; }
  #object-examples { overflow-x: auto; }
}
.checkerboard .result img, .checkerboard .result canvas, .checkerboard .batch-gallery img {
  background-color: #fff;
  background-image: conic-gradient(#d6d6d6 25%, #fff 0 50%, #d6d6d6 0 75%, #fff 0);
  background-size: 20px 20px;
}
.atelier-banner {
  border-left: 4px solid #d97706; padding: 6px 12px; background: rgba(217, 119, 6, 0.12); border-radius: 6px;
}
footer { display: none !important; }
/* Pop-ups at the bottom, narrow and brief: never over the header or a tab's buttons. */
.toast-wrap { top: auto !important; bottom: var(--size-4) !important; max-width: min(24rem, calc(100vw - 24px)); }
.status-detail pre { white-space: pre-wrap; word-break: break-word; font-size: var(--text-sm); margin: 4px 0 0; }
.status-detail summary { cursor: pointer; color: var(--body-text-color-subdued); font-size: var(--text-sm); }
"""
TABS = [
    ("Generate", "image_generation", generate.render),
    ("Face swap", "face_swap", face_swap.render),
    ("Remove background", "background_removal", background.render),
    ("Remove object", "object_removal", object_removal.render),
    ("Style transfer", "style_transfer", style.render),
]


def header() -> str:
    """The caller's own numbers, workers alive and jobs waiting per queue, with a banner for a queue
    nobody serves."""
    try:
        client = get_client()
        health = client.health()
        mine = own_numbers(client)
    except Exception:
        return (
            "<div class='atelier-banner'>Redis is unreachable: jobs cannot be submitted or followed right now. "
            "The page recovers by itself once it is back.</div>"
        )
    parts, banners = [], []
    served = operations_by_queue()
    devices = queue_devices(client)
    for queue, info in health["queues"].items():
        workers = len(info["workers"])
        name = queue_name(queue, devices.get(queue, set()))
        parts.append(f"<b>{name}</b>: {workers} worker{'s' if workers != 1 else ''}, {info['waiting']} waiting")
        if not workers and served[queue]:
            banners.append(
                f"<div class='atelier-banner'>No {queue.upper()} worker is running: "
                f"{', '.join(served[queue])} will wait.</div>"
            )
    return mine + "<div class='atelier-health'>" + " · ".join(parts) + "</div>" + "".join(banners)


def queue_devices(client: JobClient) -> dict[str, set[str]]:
    """The devices (cpu, cuda) the live workers of each queue run their jobs on, as they report them."""
    from jobs.models import live_reports

    devices: dict[str, set[str]] = {}
    try:
        for report in live_reports(client):
            for queue in report.get("queues") or []:
                devices.setdefault(queue, set()).add(str(report.get("device", "")))
    except Exception:  # workers of a version without reports: queues named plainly
        return {}
    return devices


def queue_name(queue: str, devices: set[str]) -> str:
    """A queue named by what it runs on: "gpu queue (on CPU)" when none of its workers has a GPU."""
    if queue == "gpu" and devices and "cuda" not in devices:
        return "gpu queue (on CPU)"
    return f"{queue} queue" if devices else queue


def own_numbers(client: JobClient) -> str:
    """ "3 running · 12 waiting · 88 of 120 submissions left this minute": the event's caller's own."""
    who = caller(client)
    if who is None:  # called from a script: nobody's numbers to show
        return ""
    window = get_settings().rate_window
    line = history.usage_line(client.usage(who), window[1] if window else None)
    name = who.owner.partition(":")[2] if who.enforced else "You"
    return f"<div class='atelier-usage' id='atelier-usage'>{html.escape(name)}: {html.escape(line)}</div>"


def build_ui() -> gr.Blocks:
    """The Gradio Blocks app that app.py mounts at ``/``."""
    ttl = get_settings().result_ttl  # Gradio's copies of uploads and results go with the jobs
    demo = gr.Blocks(title="Atelier", delete_cache=(min(ttl, 3600), ttl))  # not `as`: __enter__ is untyped
    with demo:
        with gr.Row(equal_height=True):
            gr.Markdown("# Atelier\nAn AI image studio · [REST API](/docs)")
            status = gr.HTML(elem_id="atelier-header")
        recent = gr.BrowserState([], storage_key="atelier-recent-jobs")
        rendered: dict[str, Rendered] = {}
        with models.collecting() as marks, gr.Tabs(elem_id="studio-tabs") as tabs:
            for title, task_type, render in TABS:
                with gr.Tab(title, id=task_type, elem_id=f"tab-{task_type}"):
                    rendered[task_type] = render()
            with gr.Tab("PNG Info", id="png_info", elem_id="tab-png_info"):
                info = png_info.render()
            with gr.Tab("Tasks", id="tasks", elem_id="tab-tasks") as tasks_tab:
                table = tasks.render(recent, tasks_tab)
            with gr.Tab("Models", id="models", elem_id="tab-models") as models_tab:
                models.render(models_tab)
        models.wire_marks(demo, marks)  # the tabs' choices that no live worker can run yet
        batch_api.render()
        wire_sending(tabs, rendered)
        png_info.wire_send(info, tabs, rendered["image_generation"].targets)
        for task_type, tab in rendered.items():
            box, batch = tab.task_id, tab.batch
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
