"""Batches on the page: many files (or prompts) through one tab's operation, followed as one.

An image tab adds :func:`files_section` (one item per file, the tab's other widgets shared by every
item); Generate adds :func:`prompts_section` (one item per prompt line and seed). Both submit through
the job client's ``submit_batch``, then follow the batch: a gallery that fills as items finish,
"37 of 120 done" with a progress bar, Cancel for the whole batch, and a zip of the results.
"""

from __future__ import annotations

import asyncio
import html
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from jobs import (
    BatchItemStatus,
    BatchNotFound,
    BatchStatus,
    InvalidSubmission,
    JobConflict,
    JobNotFound,
    JobState,
    RateLimited,
    ServiceUnavailable,
    get_client,
)
from ui.common import POLL_FIRST, admit, caller, error, explain, publish, save_result, unreachable, whole
from ui.endpoints import Submission

if TYPE_CHECKING:
    from jobs.owners import Caller

# A batch's status reads every item: poll it less often than one job's.
POLL_MAX = 0.5
YIELD_EVERY = 0.5  # the gallery goes out whole on every update: at most twice a second while items finish
SEED_MAX = 2**32 - 1
FAILURES_SHOWN = 5
NAMES_SHOWN = 3  # item names listed beside a reason several items share
ITEM_PATH = re.compile(r"^items\[(\d+)\]")
PROGRESS = gr.Progress()  # only a marker: Gradio hands the handler a tracker of its own in its place
# (gallery: (image, caption) pairs, status text, batch id, item count, zip path); gr.skip() keeps one as is.
BatchUpdate = tuple[Any, str, str, int, Any]
Cache = Callable[[str], str | None]


@dataclass(frozen=True)
class BatchRequest:
    """A batch as the job client takes it: the fields every item shares, and one dict per item."""

    fields: dict[str, Any]
    items: list[dict[str, Any]]

    @property
    def names(self) -> list[str | None]:
        return [item.get("name") for item in self.items]


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else Path(value).read_bytes()


def shared_fields(task_type: str, job: Submission) -> dict[str, Any]:
    """What every item shares: a tab's submission, its images read from their files."""
    fields: dict[str, Any] = {"task_type": task_type, "parameters": job["parameters"]}
    if job.get("prompt") is not None:
        fields["prompt"] = job.get("prompt")
    fields |= {name: _bytes(value) for name, value in job["images"].items() if value}
    return fields


def file_items(files: Sequence[str] | None, item_field: str) -> list[dict[str, Any]]:
    """One item per file, named after it, its bytes in ``item_field``."""
    return [{"name": Path(path).name, item_field: Path(path).read_bytes()} for path in files or []]


def prompt_lines(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def seeds_for(seed: int | None, count: int) -> list[int | None]:
    """``count`` seeds from ``seed`` on (seed, seed + 1, …). Without a seed, random ones, or ``[None]``
    for one image (the engine picks, as for a single job)."""
    if seed is None:
        return [None] if count == 1 else [random.randint(0, SEED_MAX) for _ in range(count)]
    return [(seed + offset) % (SEED_MAX + 1) for offset in range(count)]


def generation_items(prompts: Sequence[str], seeds: Sequence[int | None]) -> list[dict[str, Any]]:
    """One item per prompt and seed, named after both: "a red fox (seed 7)"."""
    items = []
    for prompt in prompts:
        short = prompt if len(prompt) <= 80 else prompt[:79] + "…"
        for seed in seeds:
            item: dict[str, Any] = {"prompt": prompt, "name": short if seed is None else f"{short} (seed {seed})"}
            if seed is not None:
                item["parameters"] = {"seed": seed}
            items.append(item)
    return items


def explain_items(details: Mapping[str, list[str]], names: Sequence[str | None]) -> str:
    """``explain``, with each item's path told by its name too: "chelsea.jpg (items[3].image): …"."""
    readable = {}
    for path, messages in details.items():
        match = ITEM_PATH.match(path)
        if match and int(match[1]) < len(names):
            index = int(match[1])
            path = f"{names[index] or f'item {index + 1}'} ({path})"
        readable[path] = messages
    return explain(readable)


def start(request: BatchRequest) -> dict[str, Any]:
    """Submit the batch, counted once against the client's rate limit (as REST counts it); ``gr.Error``
    with every field's problem otherwise. Returns the job client's answer (``batch_id``, ``total``…)."""
    client = get_client()
    try:
        admit(client)
        return client.submit_batch(request.fields, request.items, caller(client))
    except RateLimited as exc:
        raise gr.Error(str(exc), title="Too many requests") from None
    except InvalidSubmission as exc:
        raise error(explain_items(exc.details, request.names), title="Invalid input") from None
    except ServiceUnavailable:
        raise unreachable() from None


def batch_id_of(value: str | None) -> str:
    batch_id = (value or "").strip()[:100]  # ids are 36 characters; never echo a flood back
    if not batch_id:
        raise error("Enter a batch id.", title="Invalid input")
    return batch_id


@contextmanager
def answering(batch_id: str, retry: bool = False) -> Iterator[None]:
    """The job client's batch errors as the page's (``retry``: Redis being away is left to the caller)."""
    try:
        yield
    except BatchNotFound:
        raise error(f"Batch not found: {batch_id} is unknown or expired.", title="Not found") from None
    except ServiceUnavailable:
        if retry:
            raise
        raise unreachable() from None


def save_archive(batch_id: str, who: Caller | None) -> str:
    """The zip of the batch's results so far and its manifest.json, where Gradio may serve it from."""
    status, archive = get_client().batch_archive(batch_id, who)
    with archive:
        return publish(f"batch-{status.task_type}-{status.batch_id[:8]}.zip", archive)


def _label(item: BatchItemStatus, index: int) -> str:
    return item.name or f"item {index + 1}"


def progress_text(status: BatchStatus) -> str:
    """The status line ("37 of 120 done · 2 failed · 1 running"), the item at work, and why items failed."""
    lines = [f"Cancelled · {status.message}" if status.status == JobState.REVOKED else status.message]
    if not status.finished:
        at_work = [(i, item) for i, item in enumerate(status.items) if item.status == JobState.PROCESSING]
        waiting = [(i, item) for i, item in enumerate(status.items) if item.status == JobState.PENDING]
        for index, item in (at_work or waiting)[:1]:
            lines.append(f"{_label(item, index)}: {item.message}")
    return "\n".join(lines + failure_lines(status))


def failure_lines(status: BatchStatus) -> list[str]:
    """Why items failed, one line per reason: "Failed: b.jpg: No face found", or for several items
    with the same reason "Failed (3: a.jpg, b.jpg, c.jpg): …"."""
    reasons: dict[str, list[str]] = {}
    for index, item in enumerate(status.items):
        if item.status == JobState.FAILURE:
            reasons.setdefault(item.message, []).append(_label(item, index))
    lines = []
    for message, names in list(reasons.items())[:FAILURES_SHOWN]:
        named = ", ".join(names[:NAMES_SHOWN]) + (
            f", … {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
        )
        lines.append(f"Failed: {named}: {message}" if len(names) == 1 else f"Failed ({len(names)}: {named}): {message}")
    if len(reasons) > FAILURES_SHOWN:
        others = sum(len(names) for names in list(reasons.values())[FAILURES_SHOWN:])
        lines.append(f"… {others} more failed for other reasons (manifest.json in the zip lists them all)")
    return lines


def _collect(status: BatchStatus, shown: dict[str, tuple[str | None, str]], cache: Cache) -> None:
    """Publish each newly finished item's image, once, into the gallery's cache."""
    for index, item in enumerate(status.items):
        if item.status != JobState.SUCCESS or item.task_id in shown:
            continue
        try:
            path = cache(save_result(item.task_id))
        except (JobNotFound, JobConflict):  # expired in between: the zip's manifest says so
            path = None
        shown[item.task_id] = (path, _label(item, index))


def gallery_of(status: BatchStatus, shown: Mapping[str, tuple[str | None, str]]) -> list[tuple[str, str]]:
    """The finished items' images with their names, in the batch's order."""
    pairs = (shown.get(item.task_id) for item in status.items)
    return [(path, caption) for path, caption in (pair for pair in pairs if pair) if path]


async def follow_batch(batch_id: str, total: int, progress: gr.Progress, cache: Cache) -> AsyncIterator[BatchUpdate]:
    """Poll the batch until every item has ended: the gallery grows, the status line and the progress
    bar follow, and at the end the zip of the results is ready. ``cache`` hands an image to Gradio
    once, so the growing gallery is not copied again on every update."""
    client = get_client()
    who = caller(client)  # the event's: a batch is visible to its submitter (and admins) only
    shown: dict[str, tuple[str | None, str]] = {}
    last: tuple[int, str] | None = None
    failures, poll, last_yield = 0, POLL_FIRST, 0.0
    while True:
        try:
            with answering(batch_id, retry=True):  # Redis away: tried again below, for a while
                status = await asyncio.to_thread(client.batch_status, batch_id, who)
                await asyncio.to_thread(_collect, status, shown, cache)
            failures = 0
        except ServiceUnavailable:
            failures += 1
            if failures > 30:  # about 30 s of retries, one a second
                raise unreachable() from None
            yield gr.skip(), "Waiting for Redis to come back…", batch_id, total, gr.skip()
            await asyncio.sleep(1)
            continue
        text = progress_text(status)
        if status.finished:
            progress(1.0, desc=status.message)
            archive = None
            if status.counts[JobState.SUCCESS] or status.counts[JobState.FAILURE]:  # the manifest says why
                with answering(batch_id):
                    archive = await asyncio.to_thread(save_archive, batch_id, who)
            yield gallery_of(status, shown), text, batch_id, total, archive
            return
        if (len(shown), text) != last and time.monotonic() - last_yield >= YIELD_EVERY:
            last, last_yield = (len(shown), text), time.monotonic()
            yield gallery_of(status, shown), text, batch_id, total, None
        # After the update, so the bar comes back: the page hides it while it shows an update.
        # While every item waits there is no fraction to show, only the place in the queue.
        progress(None if status.status == JobState.PENDING else status.progress / 100, desc=status.message)
        await asyncio.sleep(poll)
        poll = min(POLL_MAX, poll * 1.5)


def streaming(build: Callable[[dict[Any, Any]], BatchRequest], cache: Cache) -> Callable[..., AsyncIterator[Any]]:
    """The Run batch handler: ``build`` the request from the section's inputs (a dict by component),
    submit it, then follow it."""

    async def run_batch(values: dict[Any, Any], progress: gr.Progress = PROGRESS) -> AsyncIterator[BatchUpdate]:
        try:
            # In a thread: the tab's submission may decode images, and every file is read.
            answer = await asyncio.to_thread(lambda: start(build(values)))
        except gr.Error as exc:
            yield [], f"Not submitted: {html.unescape(str(exc.message))}", "", 0, None
            raise
        batch_id, total = answer["batch_id"], answer["total"]
        yield [], f"Submitted {total} item{'s' if total != 1 else ''}", batch_id, total, None
        async for update in follow_batch(batch_id, total, progress, cache):
            yield update

    return run_batch


def cancel_unfinished(batch_id: str, who: Caller | None) -> BatchStatus:
    """Cancel the batch's unfinished items; the status afterwards. A batch that has ended is left as
    it is: the job client would mark it REVOKED (cancelled) all the same."""
    client = get_client()
    status = client.batch_status(batch_id, who)
    return status if status.finished else client.cancel_batch(batch_id, who)


def cancel_batch_message(batch_id: str) -> str:
    """The Cancel batch button: what became of the batch, for its status line."""
    batch_id = (batch_id or "").strip()
    if not batch_id:
        return "No batch to cancel yet"
    try:
        return progress_text(cancel_unfinished(batch_id, caller(get_client())))
    except BatchNotFound:
        return "That batch is gone (expired or unknown)"
    except ServiceUnavailable:
        raise unreachable() from None


def zip_for_page(batch_id: str) -> str:
    """The Zip button: the results so far."""
    if not (batch_id or "").strip():
        raise error("Run a batch first: its results go into the zip.", title="No batch yet")
    batch_id = batch_id_of(batch_id)
    with answering(batch_id):
        return save_archive(batch_id, caller(get_client()))


@dataclass(frozen=True)
class BatchSection:
    """What a tab's batch section shows: Run and Cancel, the status line, the gallery, the id and the zip."""

    run_button: gr.Button
    cancel_button: gr.Button
    status: gr.Textbox
    progress: gr.HTML
    gallery: gr.Gallery
    batch_id: gr.Textbox
    total: gr.Number
    zip_button: gr.Button
    archive: gr.File

    def wire(self, build: Callable[[dict[Any, Any]], BatchRequest], inputs: Sequence[Any]) -> None:
        """Run batch streams into the section (page only: scripts have the ``submit_batch`` endpoint)."""
        self.run_button.click(
            streaming(build, self.gallery.move_resource_to_block_cache),
            set(inputs),
            [self.gallery, self.status, self.batch_id, self.total, self.archive],
            api_visibility="private",
            concurrency_limit=None,  # async: a waiting user holds no worker thread
            show_progress_on=self.progress,  # its own strip: the status line and the gallery stay readable
        )
        self.cancel_button.click(cancel_batch_message, self.batch_id, self.status, api_visibility="private")
        self.zip_button.click(zip_for_page, self.batch_id, self.archive, api_visibility="private")


def _controls() -> BatchSection:
    with gr.Row():
        run_button = gr.Button("Run batch", variant="primary")
        cancel_button = gr.Button("Cancel batch", variant="stop")
    status = gr.Textbox(label="Batch status", interactive=False, max_lines=8, elem_classes="batch-status")
    progress = gr.HTML("", container=True, min_height=32, elem_classes="batch-progress")
    gallery = gr.Gallery(
        label="Results",
        columns=6,
        height=360,
        object_fit="contain",
        buttons=["download", "fullscreen"],
        elem_classes="batch-gallery",
    )
    with gr.Row(equal_height=True):
        batch_id = gr.Textbox(label="Batch id", interactive=False, buttons=["copy"], elem_classes="batch-id", scale=3)
        zip_button = gr.Button("Zip the results so far", scale=1)
    archive = gr.File(label="Results (zip)", interactive=False, elem_classes="batch-zip")
    total = gr.Number(visible=False, precision=0)
    return BatchSection(run_button, cancel_button, status, progress, gallery, batch_id, total, zip_button, archive)


def files_section(
    task_type: str,
    submission: Callable[..., Submission],
    inputs: Sequence[Any],
    replaces: Any = None,
    item_field: str = "image",
    hint: str = "Choose several photos: each becomes a job with the settings above.",
) -> BatchSection:
    """A batch of files for an image tab: each file fills ``item_field`` (the tab's ``replaces`` widget
    is left out); ``submission`` makes the shared fields from the tab's ``inputs``, as for one job."""
    with gr.Accordion("Batch — many images at once", open=False, elem_id=f"batch-{task_type}"):
        gr.Markdown(hint)
        files = gr.File(
            label="Photos (several at once)", file_count="multiple", type="filepath", elem_classes="batch-files"
        )
        section = _controls()

    def build(values: dict[Any, Any]) -> BatchRequest:
        items = file_items(values[files], item_field)
        if not items:
            raise error("Choose the photos for the batch first (several files at once).", title="Nothing to run")
        job = submission(*[None if widget is replaces else values[widget] for widget in inputs])
        return BatchRequest(shared_fields(task_type, job), items)

    section.wire(build, [files, *inputs])
    return section


def prompts_section(submission: Callable[..., Submission], inputs: Sequence[Any]) -> BatchSection:
    """Generate's batch: one image per prompt line and seed, the other settings from the tab."""
    with gr.Accordion("Batch — many images at once", open=False, elem_id="batch-image_generation"):
        gr.Markdown("One image per prompt and seed; the size, steps and the rest come from above.")
        prompts = gr.Textbox(label="Prompts, one per line (empty: the prompt above)", lines=4, elem_id="batch-prompts")
        count = gr.Slider(
            1, 16, value=1, step=1, label="Seeds per prompt (the seed above and the next ones, or random)"
        )
        section = _controls()

    def build(values: dict[Any, Any]) -> BatchRequest:
        job = submission(*[values[widget] for widget in inputs])
        lines = prompt_lines(values[prompts]) or prompt_lines(job.get("prompt"))
        if not lines:
            raise error("Write one prompt per line (or a prompt above).", title="Nothing to run")
        parameters = dict(job["parameters"])
        parameters["num_images"] = 1  # one image per prompt and seed: the tab's grid size is for single jobs
        seed = parameters.pop("seed", None)
        if seed is not None and not isinstance(seed, int):  # the job's validation names it
            parameters["seed"], seed = seed, None
        fields = shared_fields("image_generation", {**job, "parameters": parameters, "prompt": None})
        return BatchRequest(fields, generation_items(lines, seeds_for(seed, int(whole(values[count]) or 1))))

    section.wire(build, [prompts, count, *inputs])
    return section
