"""Models: which engines' models the live workers have (as ``GET /api/v1/models/``), and downloads
for a queue's workers with their progress. Also the marks on the other tabs' engine and model
choices that no live worker can run yet ("lama — downloads on first use (206 MB)")."""

from __future__ import annotations

import contextlib
import html
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gradio as gr

from jobs import InvalidSubmission, ServiceUnavailable, get_client
from jobs.models import DownloadRequest, ModelRow, ModelsReport, models_report, request_download
from settings import QUEUES
from ui.common import caller, error, explain, unreachable

NO_REPORT = "<p>Redis is unreachable: the workers' reports cannot be read right now.</p>"
STYLE = (
    "<style>#models-table table{width:100%;border-collapse:collapse}"
    "#models-table td,#models-table th{padding:4px 8px;border-bottom:1px solid #8883;text-align:left}</style>"
)


def read_report() -> ModelsReport | None:
    try:
        return models_report(get_client())
    except ServiceUnavailable:
        return None


def size_text(size: int | None) -> str:
    if not size:
        return ""
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB" if size >= 1e6 else f"{size / 1e6:.1f} MB"


def status_text(row: ModelRow) -> str:
    """ "ready on cpu@host-a, cpu@host-b", "missing, 973 MB, MIT, downloads on first use", or both."""
    if row.download == "none" and row.ready_on:
        return "built in, ready on " + ", ".join(row.ready_on)
    parts = [f"ready on {', '.join(row.ready_on)}"] if row.ready_on else []
    if row.missing_on:
        where = "missing" if not row.ready_on else f"missing on {', '.join(row.missing_on)}"
        facts = [size_text(row.size_bytes), row.license, how_to_get(row)]
        parts.append(", ".join([where, *(fact for fact in facts if fact)]))
    if not parts:
        return f"no live {row.queue} worker"
    return " · ".join(parts + row.notes)


def how_to_get(row: ModelRow) -> str:
    if row.notes:
        return "its library is not installed"
    return {"auto": "downloads on first use", "manual": "to put in place by hand", "none": ""}[row.download]


def table_html(report: ModelsReport | None) -> str:
    """The report as a table: one row per operation, engine and model (defaults first)."""
    if report is None:
        return NO_REPORT
    lines = ["<table><tr><th>Operation</th><th>Engine</th><th>Model</th><th>Status</th><th>In memory on</th></tr>"]
    for row in sorted(report.models, key=lambda row: (row.operation, row.engine, not row.default)):
        cells = [row.operation, row.engine, row.model + (" (default)" if row.default else ""), status_text(row)]
        cells.append(", ".join(row.loaded_on))
        lines.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
    return STYLE + "".join(lines) + "</table>"


def downloads_html(report: ModelsReport | None, request_id: str, queue: str) -> tuple[str, bool]:
    """Each of the queue's workers' progress on download ``request_id``, and whether any is still at it
    (a worker takes a request at its next heartbeat, or once it has finished the one before)."""
    if report is None or not request_id:
        return "", False
    lines, pending = [], False
    for worker in report.workers:
        if queue not in worker.queues:
            continue
        download = worker.download if worker.download and worker.download.request_id == request_id else None
        state = download.state if download else "waiting"
        pending |= state in ("waiting", "running")
        text = {"waiting": "about to start", "done": "done"}.get(state) or (download.message if download else "")
        prefix = "failed: " if state == "failed" else ""
        lines.append(f"<li><b>{html.escape(worker.worker)}</b>: {prefix}{html.escape(text)}</li>")
    return "<ul class='model-downloads'>" + "".join(lines) + "</ul>", pending


def queue_models(report: ModelsReport | None, queue: str) -> tuple[list[str], list[str]]:
    """(the models a queue's workers may download, the queue's defaults among them)."""
    rows = [row for row in (report.models if report else []) if row.queue == queue and row.download == "auto"]
    names = list(dict.fromkeys(row.model for row in rows))
    return names, list(dict.fromkeys(row.model for row in rows if row.default))


def start_download(queue: str, names: list[str] | None) -> tuple[str, str, dict[str, Any]]:
    """The Download button: (its message, the request id, the timer's update)."""
    client = get_client()
    who = caller(client)
    if who is not None and not who.sees_all:
        raise error("Only the users in ATELIER_ADMINS may start model downloads.", title="Not allowed")
    try:
        accepted = request_download(client, DownloadRequest(queue=queue, models=list(names or []) or None))
    except InvalidSubmission as exc:
        raise error(explain(exc.details), title="Invalid input") from None
    except ServiceUnavailable:
        raise unreachable() from None
    workers = ", ".join(accepted.workers) or f"no live {queue} worker yet (one that starts within the hour will)"
    message = f"Asked {workers} to fetch {', '.join(accepted.models) or 'nothing'}."
    return message, accepted.request_id, gr.update(active=True)


def render(tab: gr.Tab) -> None:
    gr.Markdown(
        "What each live worker has of each engine's models (as `GET /api/v1/models/` gives it). A job whose "
        "worker lacks a model that downloads on first use fetches it before it starts."
    )
    table = gr.HTML(elem_id="models-table")
    refresh = gr.Button("Refresh", size="sm")
    with gr.Row(equal_height=True):
        queue = gr.Radio(list(QUEUES), value="cpu", label="Download for the workers of queue", elem_id="models-queue")
        names = gr.Dropdown([], multiselect=True, label="Models (empty: the queue's defaults)", elem_id="models-names")
        button = gr.Button("Download", variant="primary", scale=0, min_width=160, elem_id="models-download")
    message = gr.Markdown(elem_id="models-message")
    progress = gr.HTML(elem_id="models-progress")
    request_id = gr.Textbox(visible=False)  # a hidden field, not gr.State: the page's network then settles
    timer = gr.Timer(1.0, active=False)

    def shown(queue: str) -> tuple[str, dict[str, Any]]:
        report = read_report()
        choices, defaults = queue_models(report, queue)
        return table_html(report), gr.update(choices=choices, value=defaults)

    def follow(request: str, queue: str) -> tuple[str, str, dict[str, Any]]:
        report = read_report()
        lines, pending = downloads_html(report, request, queue)
        return table_html(report), lines, gr.update(active=pending)

    for event in (tab.select, refresh.click, queue.change):
        event(shown, queue, [table, names], api_visibility="private")
    button.click(start_download, [queue, names], [message, request_id, timer], api_visibility="private").then(
        follow, [request_id, queue], [table, progress, timer], api_visibility="private"
    )
    timer.tick(follow, [request_id, queue], [table, progress, timer], api_visibility="private")


# -- marks on the other tabs' choices ---------------------------------------------------------------
@dataclass(frozen=True)
class Mark:
    """A component whose choices (engines or models of ``task_type``) or note says what cannot run yet."""

    component: Any  # gr.Dropdown, gr.Radio or gr.Markdown
    task_type: str
    kind: Literal["engine", "model", "note"]
    choices: tuple[str, ...] = ()


_marks: list[Mark] | None = None  # collecting while the page is built


@contextlib.contextmanager
def collecting() -> Iterator[list[Mark]]:
    """The marks the tabs ask for while the page is built inside the ``with``."""
    global _marks
    _marks = []
    try:
        yield _marks
    finally:
        _marks = None


def mark(component: Any, task_type: str, kind: Literal["engine", "model", "note"], choices: Sequence[str] = ()) -> Any:
    """Have the page mark ``component``'s choices (their values) that no live worker can run yet; a note
    (a Markdown) shows what ``task_type``'s engines lack. Outside a page being built: nothing."""
    if _marks is not None:
        _marks.append(Mark(component, task_type, kind, tuple(choices)))
    return component


def choice_label(value: str, rows: list[ModelRow]) -> str:
    """``value`` as is, or "value — downloads on first use (973 MB)" when no live worker has what it needs."""
    lacking = [row for row in rows if row.missing_on and not row.ready_on]
    if not lacking:
        return value
    row = lacking[0]
    if row.notes:
        return f"{value} — not installed"
    size = f" ({size_text(row.size_bytes)})" if row.size_bytes and row.download == "auto" else ""
    return f"{value} — {how_to_get(row)}{size}"


def needs(item: Mark, value: str, rows: list[ModelRow]) -> list[ModelRow]:
    """The rows a choice stands for: the model it names, or the default models of the engine it names."""
    if item.kind == "model":
        return [row for row in rows if row.model == value]
    return [row for row in rows if row.engine == value and row.default]


def marked(marks: list[Mark], report: ModelsReport | None) -> list[dict[str, Any]]:
    """An update per mark: labelled choices (values unchanged), or a note's text."""
    updates = []
    for item in marks:
        rows = [row for row in (report.models if report else []) if row.operation == item.task_type]
        if item.kind == "note":
            lacking = {row.model: choice_label(row.model, [row]) for row in rows if row.default}
            text = "; ".join(label for name, label in lacking.items() if label != name)
            updates.append(gr.update(value=f"Not yet on any live worker: {text}" if text else "", visible=bool(text)))
        else:
            choices = [(choice_label(value, needs(item, value, rows)), value) for value in item.choices]
            updates.append(gr.update(choices=choices))
    return updates


def wire_marks(demo: gr.Blocks, marks: list[Mark]) -> None:
    """Mark the choices as the page loads."""
    if marks:
        demo.load(
            lambda: marked(marks, read_report()), None, [item.component for item in marks], api_visibility="private"
        )
