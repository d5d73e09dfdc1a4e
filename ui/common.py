"""What every tab shares: submit through the job client, follow a job, show its progress."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import inspect
import logging
import math
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import gradio as gr

from access import checked_user
from jobs import (
    FINISHED,
    InvalidSubmission,
    JobClient,
    JobConflict,
    JobNotFound,
    JobState,
    RateLimited,
    ServiceUnavailable,
    get_client,
)
from jobs.status import JobStatus, StartCountdown, queued_message
from pipelines.images import ImageRejected
from settings import get_settings
from ui.uploads import converted, read, upload_of

if TYPE_CHECKING:
    from jobs.owners import Caller
    from ui.endpoints import Endpoints

log = logging.getLogger("atelier.ui")
# The status box's long texts, whole, in a collapsible "Details" (in the browser: no server round trip).
STATUS_DETAIL = """
(text) => {
  if (!text || text.length < 140) return "";
  const shown = text.replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]);
  return `<details class="status-more"><summary>Details</summary><pre>${shown}</pre></details>`;
}
"""
# A waiting page is woken by the job's own publications (progress, the end) and at least once a
# second for its countdown; without a listener to spare, it polls (10 ms at first: small jobs
# finish in milliseconds; then at most 5 reads a second).
POLL_FIRST, POLL_MAX = 0.01, 0.2
WAKE_EVERY = 1.0
RESULTS = Path(tempfile.gettempdir()) / "atelier-results"
UNREACHABLE = "Redis is unreachable, so jobs cannot be submitted or followed right now. Try again in a moment."

C = TypeVar("C", gr.Slider, gr.Number)
DONE_NAMES = {"background_removal": "no-background", "object_removal": "object-removed", "face_swap": "face-swap"}
# (result image path, task id, status message), as every `T` endpoint streams them.
Update = tuple[str | None, str, str]


def unchecked(component: C) -> C:
    """The slider or number field, its value reaching the job's validation as it was sent: a
    script's out-of-range or fractional value gets the REST API's message naming the field, not
    Gradio's unnamed one (nor a silent rounding). The page's own widgets send values in range.
    (An override on the instance: a subclass of a Gradio component writes a .pyi beside its module.)"""
    component.preprocess = lambda payload: payload  # type: ignore[method-assign]
    return component


def whole(value: Any) -> Any:
    """An integral number as an ``int``; anything else as given, for the job's validation to name."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return int(value) if is_number and float(value).is_integer() else value


def explain(details: Mapping[str, list[str]], labels: Mapping[str, str] | None = None) -> str:
    """The job system's field errors in one line; with a tab's ``labels`` (field → its widget's
    label), in the tab's words: "Source face is required; Width must be a multiple of 8 (got 500)"."""
    if not labels:
        return "Invalid input — " + "; ".join(f"{field}: {' '.join(messages)}" for field, messages in details.items())
    return "; ".join(worded(field, message, labels) for field, messages in details.items() for message in messages)


def worded(field: str, message: str, labels: Mapping[str, str]) -> str:
    """One field error as a tab says it: its label for the field name it starts with, "is required"
    without the operation's internal name, other fields' names as the tab labels them."""
    name = field.removeprefix("parameters.")
    label = labels.get(name) or labels.get(field)
    if label is None:
        return f"{field}: {message}"
    message = re.sub(r" for [a-z_]+$", "", message) if " is required for " in message else message
    head, _, rest = message.partition(" ")
    text = f"{label} {rest}" if head.lower() == name.lower() else f"{label}: {message}"
    for other, other_label in labels.items():  # "(parameters.style) or a style_image": the tab's names
        text = text.replace(f"parameters.{other}", f"“{other_label}”")
        if "_" in other:
            text = re.sub(rf"\b{other}\b", other_label.lower(), text)
    return text


def from_api() -> bool:
    """Whether the event being served comes from gradio_client (a script), not the page."""
    from gradio.context import LocalContext

    request = LocalContext.request.get(None)
    return request is not None and (request.headers or {}).get("x-gradio-user") == "api"


def error(message: str, title: str = "Error") -> gr.Error:
    """A pop-up error for a user's mistake: one line in the server log, no traceback (those are for
    real failures). Gradio renders its text as HTML, so text from users is escaped (quotes stay:
    they are harmless in text, and scripts reading the message through gradio_client see them)."""
    log.info("%s: %s", title, message[:300])
    return gr.Error(html.escape(message, quote=False), title=title, print_exception=False)


def submit(
    task_type: str,
    *,
    prompt: str | None = None,
    images: Mapping[str, Any],
    parameters: dict[str, Any],
    then: Any = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """Submit a job (a chain with ``then``'s follow-up steps); raise ``gr.Error`` with the field errors
    (in the tab's ``labels``) for bad input. Returns the task id."""
    fields: dict[str, Any] = {"task_type": task_type, "parameters": parameters}
    if prompt is not None:
        fields["prompt"] = prompt
    if then is not None:  # checked whole by the job system, which names each bad step
        fields["then"] = then
    client = get_client()
    try:
        files = {name: read(upload_of(value)) or b"" for name, value in images.items() if value}
        admit(client)
        return client.submit(fields, files, caller(client)).task_id  # the event's caller owns the job
    except RateLimited as exc:
        raise gr.Error(str(exc), title="Too many requests", print_exception=False) from None
    except InvalidSubmission as exc:
        raise refused(exc, labels) from None
    except ServiceUnavailable:
        raise unreachable() from None


def refused(exc: InvalidSubmission, labels: Mapping[str, str] | None = None) -> gr.Error:
    """The page's error for a submission the job system refused, worded with the tab's labels."""
    return error(explain(exc.details, labels), title="Check the inputs" if labels else "Invalid input")


def unreachable() -> gr.Error:
    """The page's error when Redis cannot be reached (the job client's ServiceUnavailable)."""
    return gr.Error(UNREACHABLE, title="Service unavailable", print_exception=False)


def _requester() -> tuple[str | None, Mapping[str, str], str | None] | None:
    """(checked user, headers, peer address) of the page or Gradio API event being served; None when
    called from a script, not by a client of the page.

    The tabs' handlers take no ``gr.Request``; Gradio keeps the event's request in a context
    variable, which ``asyncio.to_thread`` carries into the thread that submits.
    """
    from gradio.context import LocalContext

    request = LocalContext.request.get(None)
    if request is None:
        return None
    http = request.request  # the HTTP request the event came with: the auth middleware's scope
    user = checked_user(http.scope) if http is not None else None
    return user, request.headers, request.client.host if request.client else None


def admit(client: JobClient) -> None:
    """Count a page or Gradio API submission against its client's rate limit, as REST does."""
    requester = _requester()
    if requester is not None:
        client.admit(*requester)


def caller(client: JobClient) -> Caller | None:
    """Who the page or Gradio API event comes from, as the job client owns and checks ids by it
    (with access control on, a batch is its submitter's); None from a script: nothing checked."""
    requester = _requester()
    return client.caller(*requester) if requester is not None else None


def save_result(task_id: str, who: Caller | None = None, stem: str | None = None) -> str:
    """Write the job's PNG where Gradio may serve it from, and return the path (``who``: the caller
    it must be visible to; another owner's job is :class:`JobNotFound`). The file is named for a
    download after the photo (``stem``) and what was done: ``photo-style-mosaic.png``."""
    _, result, png = get_client().result(task_id, who)
    return publish(f"{task_id}/{download_name(result, stem)}", png, served=True)


def download_name(result: Mapping[str, Any], stem: str | None = None) -> str:
    """``photo-style-mosaic.png``, ``chelsea-no-background.png``, ``a-lighthouse-at-dusk-seed-7.png``:
    the photo's name (or the prompt's first words) and the operation that made the result."""
    metadata = result.get("metadata") or {}
    operation, parameters = metadata.get("operation"), metadata.get("parameters") or {}
    if operation == "image_generation":
        stem = stem or " ".join(str(result.get("prompt_used") or "image").split()[:6])
        done = f"seed-{metadata['seed']}" if isinstance(metadata.get("seed"), int) else ""
    elif operation == "style_transfer":
        done = f"style-{parameters['style']}" if parameters.get("style") else "style"
    elif operation == "background_removal" and parameters.get("only_mask"):
        done = "mask"
    else:
        done = DONE_NAMES.get(str(operation), "result")
    words = re.sub(r"[^a-z0-9]+", "-", f"{stem or ''} {done}".lower()).strip("-")
    return f"{words[:80].rstrip('-') or 'result'}.png"


def publish(name: str, data: bytes | IO[bytes], served: bool = False) -> str:
    """Put ``data`` (bytes, or a file to copy from) at ``RESULTS/name`` in one step and return the path.

    Gradio hashes a returned file, then copies it into its cache: a file rewritten in place
    (a second viewer of the same job, the next preview) could be copied half-written. A file that
    never changes under its name (a job's result) goes straight into Gradio's cache (``served``):
    Gradio serves it from there as it is, without hashing and copying it.
    """
    root = served_root() if served else RESULTS
    root.mkdir(parents=True, exist_ok=True)
    sweep(get_settings().result_ttl)
    path = root / name
    path.parent.mkdir(exist_ok=True)  # one folder per job: its file keeps a name fit for a download
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as staging:
        staging_path = Path(staging.name)
        try:
            if isinstance(data, bytes):
                staging.write(data)
            else:  # a batch's zip: copied in chunks, never whole in memory
                shutil.copyfileobj(data, staging)
            staging.flush()
            staging_path.chmod(0o644)  # as a plain write would have made it
            staging_path.replace(path)
        except BaseException:
            staging_path.unlink(missing_ok=True)
            raise
    return str(path)


_swept = 0.0


def sweep(max_age: float, every: float = 60.0) -> None:
    """Delete published files older than ``max_age`` (the jobs' TTL: their results are gone too),
    looking at most once every ``every`` seconds."""
    global _swept
    now = time.time()
    if now - _swept < every:
        return
    _swept = now
    for root in (RESULTS, served_root()):
        for path in root.iterdir() if root.is_dir() else ():
            with contextlib.suppress(OSError):  # another process swept it first
                if now - path.stat().st_mtime > max_age:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()


def served_root() -> Path:
    """Where jobs' results are published: inside Gradio's cache, which it serves files from as they are."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()) / "atelier-results"


class ProgressBar:
    """The page's progress bar, from submit to end: while queued, the place and a steady start
    estimate (:class:`jobs.status.StartCountdown`); then the engine's progress, moving on between an
    engine's reports (a single-step engine reports 20 %, then nothing until it is done) but never
    past the next 100 % nor backwards."""

    CREEP = 3.0  # seconds over which the bar covers most of the way from a report towards 95 %

    def __init__(self, progress: gr.Progress) -> None:
        self.progress = progress
        self.countdown = StartCountdown()
        self.reported: tuple[float, float] | None = None  # (fraction, when)
        self.shown = 0.0

    def show(self, status: JobStatus) -> str:
        """Update the bar for ``status``; the message for the status box."""
        now = time.monotonic()
        if status.status == JobState.PENDING:
            message = queued_message(status, self.countdown.seconds(status.eta_seconds, now))
            self.progress(0.0, desc=message)
            return message
        fraction = status.progress / 100
        if self.reported is None or fraction != self.reported[0]:
            self.reported = (fraction, now)
        reported, since = self.reported
        creeping = reported + (0.95 - reported) * 0.5 * (1 - math.exp(-(now - since) / self.CREEP))
        self.shown = max(self.shown, reported, min(creeping, 0.95))
        self.progress(self.shown, desc=status.message)
        return status.message

    def done(self) -> None:
        self.progress(1.0, desc="Done")


async def follow(task_id: str, progress: gr.Progress, stem: str | None = None) -> AsyncIterator[Update]:
    """Poll the job until it ends, reporting progress; the image on success (named after ``stem``, the
    photo's name), ``gr.Error`` on failure.

    Async on purpose: a waiting user holds no worker thread, only a coroutine.
    """
    client = get_client()
    who = caller(client)  # the event's: another owner's id is as unknown here as over REST
    bar = ProgressBar(progress)
    last_message = last_preview = None
    shown: str | None = None  # the latest preview stays up while the messages change
    failures = 0
    status: JobStatus | None = None
    while True:
        try:
            status = await next_status(client, task_id, who, status)
            who = None  # checked once: a job's owner never changes
            failures = 0
        except JobNotFound:
            raise error(f"Task {task_id} was not found: it expired or never existed.") from None
        except ServiceUnavailable:
            failures += 1
            if failures > 30:  # about 30 s of retries, one a second
                raise unreachable() from None
            yield None, task_id, "Waiting for Redis to come back…"
            await asyncio.sleep(1)
            continue
        if status.finished:
            async for update in ended(status, bar, stem):
                yield update
            return
        message = bar.show(status)
        if status.preview and status.preview != last_preview:  # the engine's picture of the work so far
            last_preview, last_message = status.preview, message
            # A file, written once per preview: a PIL image would be re-encoded into the same
            # cache file on every yield, truncating it under a client still downloading it.
            shown = await asyncio.to_thread(publish, f"{task_id}.preview.png", base64.b64decode(status.preview))
            yield shown, task_id, message
        elif message != last_message:
            last_message = message
            yield shown, task_id, message


async def next_status(client: JobClient, task_id: str, who: Caller | None, last: JobStatus | None) -> JobStatus:
    """The job's status: at once the first time (checking it is ``who``'s), then at its next change,
    woken by the worker's publication as REST's ``?wait=`` is, or after WAKE_EVERY seconds (the bar's
    countdown and creep move on). Polls instead, while the process has no listener to spare."""
    if last is None:
        return await asyncio.to_thread(client.status, task_id, who)
    started = time.monotonic()
    status = await client.watch(task_id, WAKE_EVERY)
    if status.looks() == last.looks() and time.monotonic() - started < POLL_FIRST:
        await asyncio.sleep(POLL_MAX)  # answered at once, unchanged: no listener was free
    return status


async def ended(status: JobStatus, bar: ProgressBar, stem: str | None) -> AsyncIterator[Update]:
    """The last updates of a job that ended: its image and what to know about it, "Cancelled", or
    "Failed: …" (in the status box whole; the pop-up short, for the page; scripts get it whole)."""
    task_id = status.task_id
    if status.status == JobState.SUCCESS:
        bar.done()
        path, note = await asyncio.to_thread(finished, task_id, stem)  # visible: checked by the first status
        yield path, task_id, note
    elif status.status == JobState.FAILURE:
        yield None, task_id, f"Failed: {status.message}"
        short = headline(status.message)
        more = " — the details are under Status" if short != status.message.strip() else ""
        gr.Warning(html.escape(short + more), duration=8, title="The job failed")
        log.info("Job %s failed: %s", task_id, status.message[:300])
        raise gr.Error(html.escape(status.message, quote=False), visible=False, print_exception=False)
    else:
        yield None, task_id, "Cancelled"


def headline(message: str, limit: int = 100) -> str:
    """What a pop-up shows of a message: its first sentence, or of a long one what comes before its
    detail (a colon, a dash, a parenthesis), at most ``limit`` characters."""
    first = re.split(r"(?<=[.!?])\s|\n", message.strip(), maxsplit=1)[0]
    if len(first) > limit:
        first = re.split(r":\s| — | \(", first, maxsplit=1)[0]
    first = re.split(r"\s(?:at|in|from|under|to)\s+/|\s/", first, maxsplit=1)[0]  # no server paths
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


def finished(task_id: str, stem: str | None = None) -> tuple[str, str]:
    """The finished job's image, published for the page, and its status line: "Done", with what the
    user should know of how it was made (a fallback engine, a lower working resolution)."""
    _, result, png = get_client().result(task_id)
    path = publish(f"{task_id}/{download_name(result, stem)}", png, served=True)
    return path, done_message(result)


def done_message(result: Mapping[str, Any]) -> str:
    metadata = result.get("metadata") or {}
    fallback = metadata.get("fallback") or {}
    notes = [str(fallback["note"]).removeprefix("Done ")] if fallback.get("note") else []
    worked = working_side(metadata)
    width, height = result.get("width"), result.get("height")
    if worked and width and height and max(width, height) > worked:
        notes.append(f"worked at {worked} px on the longest side, then scaled to {width}×{height}")
    return "Done" + (" " if notes and notes[0].startswith("with") else " — " if notes else "") + "; ".join(notes)


def working_side(metadata: Mapping[str, Any]) -> int | None:
    """The longest side the engine worked at, for the engines that work smaller than the photo."""
    from pipelines.diffusion import MAX_WORKING_SIDE

    parameters = metadata.get("parameters") or {}
    if metadata.get("engine") == "diffusion" and metadata.get("operation") in ("style_transfer", "object_removal"):
        return MAX_WORKING_SIDE
    if metadata.get("operation") == "style_transfer" and metadata.get("engine") == "fast":
        return int(parameters.get("max_size") or 0) or None
    return None


async def run(
    task_type: str, progress: gr.Progress, job: Callable[[], Mapping[str, Any]], labels: Mapping[str, str] | None = None
) -> AsyncIterator[Update]:
    """Make the job (``job()``: a tab's submission, which may read and decode uploads), submit it, then
    follow it: the body of every ``api_name=T`` endpoint. Anything refused is told in the status box
    ("Not submitted: …") as well as in the pop-up."""
    made: dict[str, Any] = {}
    try:
        task_id = await asyncio.to_thread(lambda: submitted(task_type, lambda: made.update(job()) or made, labels))
    except gr.Error as exc:
        yield None, "", f"Not submitted: {html.unescape(str(exc.message))}"
        raise
    yield None, task_id, "Submitted"
    async for update in follow(task_id, progress, stem_of(made.get("images") or {})):
        yield update


def stem_of(images: Mapping[str, Any]) -> str | None:
    """The name of the photo a job changes (a face swap's target photo), for its result's file name."""
    for field in ("target_image", "image"):
        if isinstance(images.get(field), str):
            stem = Path(images[field]).stem
            return None if stem in ("background", "image", "blob") else stem  # the editor's own names
    return None


def submitted(task_type: str, job: Callable[[], Mapping[str, Any]], labels: Mapping[str, str] | None = None) -> str:
    """``submit(task_type, **job())``: its task id; ``gr.Error`` (in the tab's words) when refused."""
    try:
        submission = job()
    except InvalidSubmission as exc:  # found while the tab read its inputs (an upload that is no image)
        raise refused(exc, labels) from None
    return submit(task_type, labels=labels, **submission)


def cancel(task_id: str) -> str:
    """The Cancel button of a tab: a message for its status box."""
    task_id = (task_id or "").strip()
    if not task_id:
        return "Nothing to cancel yet"
    try:
        client = get_client()
        status = client.cancel(task_id, caller(client))
    except JobNotFound:
        return "That task is gone (expired or unknown)"
    except JobConflict as exc:  # finished already; its result is kept
        return f"Not cancelled: the task already finished ({exc.status.status})"
    return "Cancelled" if status.status == JobState.REVOKED else status.message


@dataclass
class JobControls:
    """The right-hand column every tab has: result, status, task id, Then… (follow-up steps), Run and
    Cancel, and Send to ▸ (the result into another tab: ``ui.chain.wire_sending``)."""

    result: gr.Image
    status: gr.Textbox
    task_id: gr.Textbox
    run_button: gr.Button
    cancel_button: gr.Button
    then: gr.Textbox
    send: dict[str, gr.Button]

    def wire(self, endpoints: Endpoints, inputs: Sequence[gr.components.Component]) -> None:
        """Run → ``api_name=T`` (streams), a hidden ``submit_T`` (returns the id), Cancel → the job system.
        Both endpoints take the follow-up steps last (``then``)."""
        task_type = endpoints.task_type
        names = list(inspect.signature(endpoints.submit).parameters)
        endpoints.labels.update(labels_of(dict(zip(names, inputs, strict=False))))
        for name, widget in zip(names, inputs, strict=False):
            # Not the object editor: it draws what it is given in the browser (a file that is no image
            # never reaches the server) and sends it on as PNG; an upload handler would reload it.
            if isinstance(widget, gr.Image):
                check = checked_upload(endpoints.labels.get(name, "The image"))
                widget.upload(check, widget, [widget, self.status], api_visibility="private")
        inputs = [*inputs, self.then]
        self.run_button.click(
            endpoints.run,
            inputs,
            [self.result, self.task_id, self.status],
            api_name=task_type,
            concurrency_limit=None,  # async: a waiting user holds no worker thread
            show_progress_on=self.result,
        )
        gr.Button(visible=False).click(
            endpoints.submit, inputs, self.task_id, api_name=f"submit_{task_type}", concurrency_limit=None
        )
        self.cancel_button.click(cancel, self.task_id, self.status, api_visibility="private")


def checked_upload(label: str) -> Callable[[Any], tuple[Any, Any]]:
    """An image field's upload handler: a file that is no image (a text file renamed .jpg) is refused
    at once, in the job system's words and the field's label, and the field emptied; a BMP, TIFF or
    GIF is shown converted to PNG. The status box says which."""

    def check(value: Any) -> tuple[Any, Any]:
        upload = upload_of(value)
        if upload is None:
            return gr.skip(), gr.skip()
        try:
            png, note = converted(read(upload) or b"", get_settings().max_pixels)
        except ImageRejected as exc:
            message = f"{label} {exc}"
            log.info("Upload refused: %s", message)
            gr.Warning(html.escape(message), title="Not an image Atelier can use")
            return None, f"Not used: {message}"
        if png is None:
            return gr.skip(), gr.skip()
        stem = Path(upload).stem if isinstance(upload, str) else "image"
        path = publish(f"{uuid.uuid4()}/{stem}.png", png)
        return path, f"{label}: {note}"

    return check


def labels_of(widgets: Mapping[str, Any]) -> dict[str, str]:
    """Each named input's label as a person reads it on the tab: "Photo" for "Photo — paint over what
    to remove", "Face to replace" for "Face to replace (-1 = all faces, 0 = leftmost)"."""
    labels = {}
    for name, widget in widgets.items():
        label = getattr(widget, "label", None)
        if label:
            labels[name] = re.split(r" — | \(|…", str(label))[0].strip() or str(label)
    return labels


def result_image(**where: Any) -> gr.Image:
    """A job's result as the page shows it (a PNG file, to download or see full screen); ``where``:
    its ``elem_id`` or ``elem_classes``."""
    return gr.Image(
        label="Result", type="filepath", format="png", interactive=False, buttons=["download", "fullscreen"], **where
    )


def job_controls(task_type: str) -> JobControls:
    from ui.chain import follow_ups, send_buttons  # ui.chain builds on this module

    result = result_image(elem_classes="result")
    send = send_buttons(task_type)
    status = gr.Textbox(label="Status", interactive=False, max_lines=3, elem_classes="job-status")
    # A long status (a missing model's paths and commands) also opens as a whole below it, in the page.
    detail = gr.HTML("", elem_classes="status-detail", padding=False)
    status.change(None, status, detail, js=STATUS_DETAIL, show_progress="hidden", api_visibility="private")
    task_id = gr.Textbox(label="Task id", interactive=False, buttons=["copy"], elem_classes="task-id")
    then = follow_ups(task_type).steps
    with gr.Row():
        run_button = gr.Button("Run", variant="primary")
        cancel_button = gr.Button("Cancel", variant="stop")
    return JobControls(result, status, task_id, run_button, cancel_button, then, send)


__all__ = ["FINISHED", "JobControls", "Update", "cancel", "follow", "job_controls", "run", "submit"]
