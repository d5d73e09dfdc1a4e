"""What every tab shares: submit through the job client, follow a job, show its progress."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
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
from settings import get_settings

if TYPE_CHECKING:
    from jobs.owners import Caller
    from ui.endpoints import Endpoints

# Poll fast at first (small jobs finish in milliseconds), then back off: progress stays fresh
# (≤ 0.2 s) without one waiting user costing Redis more than 5 reads a second.
POLL_FIRST, POLL_MAX = 0.01, 0.2
RESULTS = Path(tempfile.gettempdir()) / "atelier-results"
UNREACHABLE = "Redis is unreachable, so jobs cannot be submitted or followed right now. Try again in a moment."

C = TypeVar("C", gr.Slider, gr.Number)
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


def explain(details: dict[str, list[str]]) -> str:
    return "Invalid input — " + "; ".join(f"{field}: {' '.join(messages)}" for field, messages in details.items())


def error(message: str, title: str = "Error") -> gr.Error:
    """A pop-up error. Gradio renders its text as HTML, so text from users is escaped (quotes stay:
    they are harmless in text, and scripts reading the message through gradio_client see them)."""
    return gr.Error(html.escape(message, quote=False), title=title)


def submit(
    task_type: str,
    *,
    prompt: str | None = None,
    images: dict[str, Any],
    parameters: dict[str, Any],
    then: Any = None,
) -> str:
    """Submit a job (a chain with ``then``'s follow-up steps); raise ``gr.Error`` with the field errors
    for bad input. Returns the task id."""
    files = {}
    for name, value in images.items():
        if value:
            files[name] = Path(value).read_bytes() if isinstance(value, str) else value
    fields: dict[str, Any] = {"task_type": task_type, "parameters": parameters}
    if prompt is not None:
        fields["prompt"] = prompt
    if then is not None:  # checked whole by the job system, which names each bad step
        fields["then"] = then
    client = get_client()
    try:
        admit(client)
        return client.submit(fields, files, caller(client)).task_id  # the event's caller owns the job
    except RateLimited as exc:
        raise gr.Error(str(exc), title="Too many requests") from None
    except InvalidSubmission as exc:
        raise error(explain(exc.details), title="Invalid input") from None
    except ServiceUnavailable:
        raise unreachable() from None


def unreachable() -> gr.Error:
    """The page's error when Redis cannot be reached (the job client's ServiceUnavailable)."""
    return gr.Error(UNREACHABLE, title="Service unavailable")


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


def save_result(task_id: str, who: Caller | None = None) -> str:
    """Write the job's PNG where Gradio may serve it from, and return the path (``who``: the caller
    it must be visible to; another owner's job is :class:`JobNotFound`)."""
    _, _, png = get_client().result(task_id, who)
    RESULTS.mkdir(exist_ok=True)
    now = time.time()
    for old in RESULTS.glob("*.png"):  # Gradio keeps its own copy; ours only bridges the hand-over
        with contextlib.suppress(FileNotFoundError):  # concurrent jobs clean up the same old files
            if now - old.stat().st_mtime > 3600:
                old.unlink(missing_ok=True)
    return publish(f"{task_id}.png", png)


def publish(name: str, data: bytes | IO[bytes]) -> str:
    """Put ``data`` (bytes, or a file to copy from) at ``RESULTS/name`` in one step and return the path.

    Gradio hashes a returned file, then copies it into its cache: a file rewritten in place
    (a second viewer of the same job, the next preview) could be copied half-written.
    """
    RESULTS.mkdir(exist_ok=True)
    sweep(get_settings().result_ttl)
    path = RESULTS / name
    with tempfile.NamedTemporaryFile(dir=RESULTS, prefix=f".{name}.", delete=False) as staging:
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
    for path in RESULTS.iterdir():
        with contextlib.suppress(OSError):  # another process swept it first
            if now - path.stat().st_mtime > max_age:
                path.unlink()


async def follow(task_id: str, progress: gr.Progress) -> AsyncIterator[Update]:
    """Poll the job until it ends, reporting progress; the image on success, ``gr.Error`` on failure.

    Async on purpose: a waiting user holds no worker thread, only a coroutine.
    """
    client = get_client()
    who = caller(client)  # the event's: another owner's id is as unknown here as over REST
    last_message = last_preview = None
    shown: str | None = None  # the latest preview stays up while the messages change
    failures = 0
    poll = POLL_FIRST
    while True:
        try:
            status = await asyncio.to_thread(client.status, task_id, who)
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
        if status.status == JobState.SUCCESS:
            progress(1.0, desc="Done")
            yield await asyncio.to_thread(save_result, task_id), task_id, "Done"  # visible: checked above
            return
        if status.status == JobState.FAILURE:
            yield None, task_id, f"Failed: {status.message}"
            raise error(status.message, title="The job failed")
        if status.status == JobState.REVOKED:
            yield None, task_id, "Cancelled"
            return
        # While queued there is no fraction to show, only the place in the queue.
        progress(None if status.status == JobState.PENDING else status.progress / 100, desc=status.message)
        if status.preview and status.preview != last_preview:  # the engine's picture of the work so far
            last_preview, last_message = status.preview, status.message
            # A file, written once per preview: a PIL image would be re-encoded into the same
            # cache file on every yield, truncating it under a client still downloading it.
            shown = await asyncio.to_thread(publish, f"{task_id}.preview.png", base64.b64decode(status.preview))
            yield shown, task_id, status.message
        elif status.message != last_message:
            last_message = status.message
            yield shown, task_id, status.message
        await asyncio.sleep(poll)
        poll = min(POLL_MAX, poll * 1.5)


async def run(task_type: str, progress: gr.Progress, **submission: Any) -> AsyncIterator[Update]:
    """Submit, then follow: the body of every ``api_name=T`` endpoint."""
    try:
        task_id = await asyncio.to_thread(lambda: submit(task_type, **submission))
    except gr.Error as exc:
        yield None, "", f"Not submitted: {html.unescape(str(exc.message))}"
        raise
    yield None, task_id, "Submitted"
    async for update in follow(task_id, progress):
        yield update


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


def job_controls(task_type: str) -> JobControls:
    from ui.chain import follow_ups, send_buttons  # ui.chain builds on this module

    result = gr.Image(
        label="Result",
        type="filepath",
        format="png",
        interactive=False,
        buttons=["download", "fullscreen"],
        elem_classes="result",
    )
    send = send_buttons(task_type)
    status = gr.Textbox(label="Status", interactive=False, elem_classes="job-status")
    task_id = gr.Textbox(label="Task id", interactive=False, buttons=["copy"], elem_classes="task-id")
    then = follow_ups(task_type).steps
    with gr.Row():
        run_button = gr.Button("Run", variant="primary")
        cancel_button = gr.Button("Cancel", variant="stop")
    return JobControls(result, status, task_id, run_button, cancel_button, then, send)


__all__ = ["FINISHED", "JobControls", "Update", "cancel", "follow", "job_controls", "run", "submit"]
