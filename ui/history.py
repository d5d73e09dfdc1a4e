"""The caller's own jobs, kept by the server (the same on every device and browser they log in from):
the Tasks tab's list, a page at a time with thumbnails of finished jobs, and the header's numbers."""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gradio as gr
from PIL import Image

from jobs import JobNotFound, JobState, ServiceUnavailable, get_client
from jobs.owners import Caller, Usage
from ui.common import caller, publish, served_root

PAGE = 20  # jobs per page, and so at most this many thumbnails made per refresh
THUMBNAIL = 160  # pixels, the longer side
HEADERS = ["Task id", "Status", "Operation", "Submitted", "Result"]
# The result column shows the thumbnail.
DATATYPES: list[Literal["str", "markdown"]] = ["str", "str", "str", "str", "markdown"]
WINDOWS = {1: "this second", 60: "this minute", 3600: "this hour", 86400: "today"}


def operation_title(entry: Mapping[str, Any]) -> str:
    """The Operation column: the operation's title, a chain or batch item marked."""
    from pipelines import OPERATIONS  # the registry only: light to import

    task_type = str(entry.get("task_type") or "")
    operation = OPERATIONS.get(task_type)
    title = operation.title if operation is not None else task_type
    steps = entry.get("steps")
    if steps:
        title += f" · chain of {steps} steps"
    if entry.get("batch_id"):
        title += " · batch item"
    return title


def submitted(created_at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(created_at))


# A state as the page says it (the API's names stay in the API).
STATUS_WORDS = {
    "PENDING": "Queued",
    "PROCESSING": "Running",
    "SUCCESS": "Done",
    "FAILURE": "Failed",
    "REVOKED": "Cancelled",
}


def status_word(state: Any) -> str:
    return STATUS_WORDS.get(str(state), str(state).title())


def rows(entries: Sequence[Mapping[str, Any]], thumbnails: Mapping[str, str] | None = None) -> list[list[str]]:
    """The table's rows: task id, status, operation, submit time, and the finished job's thumbnail
    (``thumbnails``: task id → a file Gradio serves)."""
    table = []
    for entry in entries:
        task_id = str(entry["task_id"])
        thumb = (thumbnails or {}).get(task_id)
        picture = f"![result](/gradio_api/file={thumb})" if thumb else ""
        when = submitted(float(entry["created_at"]))
        table.append([task_id, status_word(entry["status"]), operation_title(entry), when, picture])
    return table


def window_words(seconds: int) -> str:
    return WINDOWS.get(seconds, f"in this {seconds}-second window")


def usage_line(usage: Usage, seconds: int | None) -> str:
    """ "3 running · 12 waiting · 88 of 120 submissions left this minute" (the last part with a rate limit)."""
    parts = [f"{usage.running} running", f"{usage.waiting} waiting"]
    if usage.window is not None and seconds is not None:
        window = usage.window
        parts.append(f"{window.remaining} of {window.limit} submissions left {window_words(seconds)}")
    return " · ".join(parts)


def shrink(png: bytes, size: int = THUMBNAIL) -> bytes:
    """A small PNG of ``png`` (its longer side ``size`` pixels at most)."""
    with Image.open(io.BytesIO(png)) as image:
        image.thumbnail((size, size))
        out = io.BytesIO()
        image.save(out, format="PNG")
    return out.getvalue()


def thumbnail(task_id: str, who: Caller | None) -> str | None:
    """The path of a finished job's thumbnail, made once per job; None if its result is gone."""
    path = served_root() / f"{task_id}.thumb.png"  # served as it is: the table shows it by its path
    if path.exists():
        return str(path)
    try:
        _, _, png = get_client().result(task_id, who)
    except (JobNotFound, ServiceUnavailable):
        return None
    except Exception:  # not finished after all, or an unreadable image: no thumbnail, the row stays
        return None
    return publish(path.name, shrink(png), served=True)


@dataclass
class HistoryPage:
    """What one page of the list shows."""

    table: list[list[str]]
    gallery: list[tuple[str, str]]
    shown: list[str]  # the task id of each gallery picture
    next_cursor: str | None
    note: str


def load_page(cursor: str | None) -> HistoryPage:
    """One page of the event's caller's jobs (every job without access control), newest first."""
    client = get_client()
    who = caller(client) or Caller("", enforced=False)  # from a script: nothing is checked
    try:
        entries, next_cursor = client.history(who, PAGE, cursor)
    except ServiceUnavailable:
        return HistoryPage([], [], [], None, "Redis is unreachable: the list shows again once it is back.")
    except ValueError:  # a cursor from an older page that expired meanwhile: start again
        return load_page(None) if cursor else HistoryPage([], [], [], None, "No jobs.")
    gallery, shown = [], []
    for entry in entries:
        if entry["status"] == JobState.SUCCESS:
            path = thumbnail(str(entry["task_id"]), who)
            if path is not None:
                gallery.append((path, operation_title(entry)))
                shown.append(str(entry["task_id"]))
    count = len(entries)
    note = f"{count} job{'s' if count != 1 else ''}" + (" on this page; more on the next" if next_cursor else "")
    thumbnails = dict(zip(shown, (path for path, _ in gallery), strict=True))
    return HistoryPage(rows(entries, thumbnails), gallery, shown, next_cursor, note if count else "No jobs yet.")


def show(page: HistoryPage) -> tuple[Any, ...]:
    return (
        gr.Dataframe(value=page.table, headers=HEADERS, datatype=DATATYPES),
        page.gallery,
        page.shown,
        page.next_cursor or "",
        page.note,
        gr.Button(interactive=page.next_cursor is not None),
    )


def first_page() -> tuple[Any, ...]:
    return show(load_page(None))


def next_page(cursor: str | None) -> tuple[Any, ...]:
    return show(load_page(cursor or None))


@dataclass
class History:
    """The list's widgets: the table, the finished jobs' thumbnails and the ids behind them."""

    table: gr.Dataframe
    gallery: gr.Gallery
    shown: gr.JSON


def render(tab: gr.Tab | None = None) -> History:
    """The list, its Refresh and Older buttons; it loads with the page and again when ``tab`` is opened."""
    from gradio.context import Context

    with gr.Row():
        gr.Markdown("### Your jobs\nSubmitted from any device or script; pick one to open, download or cancel it.")
        refresh = gr.Button("Refresh", scale=0, elem_id="history-refresh")
        older = gr.Button("Older →", scale=0, interactive=False, elem_id="history-older")
    note = gr.Markdown(elem_id="history-note")
    table = gr.Dataframe(
        headers=HEADERS, datatype=DATATYPES, interactive=False, wrap=True, elem_id="history-table", label="Jobs"
    )
    gallery = gr.Gallery(
        label="Finished",
        columns=10,
        fit_columns=False,
        height=170,
        object_fit="contain",
        buttons=["download"],
        elem_id="history-gallery",
        interactive=False,
    )
    # Hidden fields, not gr.State: a State in this tab keeps the page's network from ever going idle.
    shown, cursor = gr.JSON([], visible=False), gr.Textbox("", visible=False)
    outputs = [table, gallery, shown, cursor, note, older]
    refresh.click(first_page, None, outputs, api_visibility="private", concurrency_limit=None)
    if tab is not None:  # jobs and batches submitted in the other tabs since the page loaded
        tab.select(first_page, None, outputs, api_visibility="private", concurrency_limit=None)
    older.click(next_page, cursor, outputs, api_visibility="private", concurrency_limit=None)
    if Context.root_block is not None:  # inside the page's Blocks: the list loads with it
        Context.root_block.load(first_page, None, outputs, api_visibility="private")
    return History(table, gallery, shown)
