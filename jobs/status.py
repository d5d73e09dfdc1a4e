"""What a client sees of a job: one status model, and how a job's record and Celery state map to it.

Pure functions, no Redis: the client reads, these describe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from tasks.states import FINISHED, JobState

STARTS_IN = ", starts in about "
# Fields of a job's (or batch's) Redis record that the webhook senders count into.
WEBHOOK_DELIVERED, WEBHOOK_FAILED, WEBHOOK_ERROR = "webhook_delivered", "webhook_failed", "webhook_error"


class WebhookReport(BaseModel):
    """How the deliveries of a job's (or batch's) webhook went so far."""

    delivered: int = Field(description="Events the receiver accepted (answered 2xx)")
    failed: int = Field(
        description="Failed attempts (an error, a non-2xx answer or none within 10 s); each is retried with the "
        "same webhook-id until the retries run out"
    )
    last_error: str | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="The last failed attempt, and whether it is tried again",
    )


def webhook_report(record: Mapping[str, str]) -> WebhookReport | None:
    """The webhook part of a status, from the job's or batch's record; None without a webhook."""
    if "webhook" not in record:
        return None
    return WebhookReport(
        delivered=int(record.get(WEBHOOK_DELIVERED, 0)),
        failed=int(record.get(WEBHOOK_FAILED, 0)),
        last_error=record.get(WEBHOOK_ERROR),
    )


class ChainStepStatus(BaseModel):
    """One step of a chain, as the chain's status lists it; its task id works on its own too."""

    task_id: str
    task_type: str
    status: JobState


class JobStatus(BaseModel):
    """A job's state as the client, the REST API (its response schema), the page and tests see it."""

    task_id: str
    status: JobState = Field(description="PENDING, PROCESSING, SUCCESS, FAILURE or REVOKED")
    progress: int = Field(ge=0, le=100)
    message: str
    result_available: bool
    task_type: str
    queue: str
    position: int | None = Field(default=None, description="While PENDING: 1 = next to run")
    eta_seconds: float | None = Field(default=None, description="While PENDING: estimated seconds until it starts")
    updated_at: float | None = Field(default=None, description="While PROCESSING: when the worker published it")
    preview: str | None = Field(
        default=None,
        description="While PROCESSING, for engines that publish one: a small base64 PNG of the work so far",
    )
    webhook: WebhookReport | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="With a webhook: how its deliveries went",
    )

    step: int | None = Field(
        default=None, exclude_if=lambda value: value is None, description="A chain: the step it is at (1-based)"
    )
    steps: list[ChainStepStatus] | None = Field(
        default=None, exclude_if=lambda value: value is None, description="A chain: each step's task id and state"
    )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def as_dict(self) -> dict[str, Any]:
        """The JSON body: queue fields only while queued (``eta_seconds`` may be null then), the
        optional fields only when set."""
        data = self.model_dump()
        if self.position is None:
            del data["position"], data["eta_seconds"]
        for optional in ("updated_at", "preview"):
            if data[optional] is None:
                del data[optional]
        return data

    def looks(self) -> tuple[Any, ...]:
        """What a waiting client wants to hear a change of: not the start estimate, which moves
        with the clock while anything runs."""
        message = self.message.split(STARTS_IN)[0]
        return self.status, self.progress, message, self.position, self.updated_at, self.preview


@dataclass(frozen=True)
class QueueView:
    """A queued job's place: its position (None once a worker took it), the queue's live workers,
    its operation's typical run time, and (elapsed s, progress 0-1) of each job running there."""

    position: int | None
    workers: int
    typical_runtime: float | None
    running: Sequence[tuple[float, float]] = ()


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def failure_message(info: Any) -> str:
    """The readable message of a failed job's Celery result."""
    if isinstance(info, dict) and "exc_message" in info:
        args = info["exc_message"]
        text = " ".join(str(arg) for arg in args) if isinstance(args, list | tuple) else str(args)
        return text or info.get("exc_type", "Job failed")
    return str(info) if info else "Job failed"


def start_estimate(position: int, workers: int, typical: float, running: Sequence[tuple[float, float]]) -> float:
    """Seconds until a job at ``position`` starts: what the running jobs have left, plus the jobs
    ahead of it at the queue's typical run time, shared among the queue's workers."""
    left = 0.0
    for elapsed, progress in running:
        if progress >= 0.05:  # extrapolate from its own pace
            left += elapsed * (1 - progress) / progress
        else:  # barely started: assume a typical job, or half again what it already took
            left += max(typical - elapsed, elapsed / 2)
    return (left + (position - 1) * typical) / workers


class StartCountdown:
    """A steady "starts in about N s" for one waiting client, from the estimates of successive polls.

    Each poll's estimate moves with the running jobs' pace: shown as it comes, it counts
    6 → 7 → 9 → 10 → 1. Here each estimate is turned into a start time, smoothed, and counted down
    by the clock: the number shown never goes up by less than a real change (a third more and at
    least 5 s), and is rounded coarser the further off the start is.
    """

    SMOOTHING = 0.3  # weight of a new estimate's start time

    def __init__(self) -> None:
        self.start: float | None = None  # the smoothed start time (the clock's seconds)
        self.shown: int | None = None

    def seconds(self, eta: float | None, now: float) -> int | None:
        """Seconds to show for an estimate of ``eta`` seconds made at ``now``; None: no estimate."""
        if eta is None:
            self.start = self.shown = None
            return None
        start = now + eta
        self.start = start if self.start is None else self.start + self.SMOOTHING * (start - self.start)
        left = steady_seconds(max(0.0, self.start - now))
        if self.shown is None or left <= self.shown or left >= self.shown + max(5, self.shown / 3):
            self.shown = left
        return self.shown


def steady_seconds(seconds: float) -> int:
    """Whole seconds under 10 (at least 1), then fives under a minute, then whole minutes."""
    if seconds < 10:
        return max(1, round(seconds))
    if seconds < 60:
        return int(5 * round(seconds / 5))
    return int(60 * round(seconds / 60))


def queued_message(status: JobStatus, seconds: int | None) -> str:
    """A queued job's message with ``seconds`` (a :class:`StartCountdown`'s) as its start estimate."""
    place = status.message.split(STARTS_IN)[0]
    if seconds is None:
        return place
    return place + STARTS_IN + (f"{seconds // 60} min" if seconds >= 60 else f"{seconds} s")


def _make(
    task_id: str, record: Mapping[str, str], state: JobState, progress: int, message: str, **extra: Any
) -> JobStatus:
    return JobStatus(
        task_id=task_id,
        status=state,
        progress=progress,
        message=message,
        result_available=state == JobState.SUCCESS,
        task_type=record["task_type"],
        queue=record["queue"],
        webhook=webhook_report(record),
        **extra,
    )


def is_queued(record: Mapping[str, str], meta: Mapping[str, Any]) -> bool:
    """Whether the job waits in its queue (its status then needs a :class:`QueueView`)."""
    return record.get("outcome") != JobState.REVOKED and meta["status"] == JobState.PENDING


def describe(task_id: str, record: Mapping[str, str], meta: Mapping[str, Any]) -> JobStatus:
    """The status of a job that is not queued, from its record and its Celery state ``meta``."""
    if record.get("outcome") == JobState.REVOKED:
        return _make(task_id, record, JobState.REVOKED, 0, "Cancelled")
    state, info = meta["status"], meta.get("result")
    if state == "STARTED":
        return _make(task_id, record, JobState.PROCESSING, 0, "Starting")
    if state == JobState.PROCESSING:
        info = info or {}
        preview = info.get("preview")
        return _make(
            task_id,
            record,
            JobState.PROCESSING,
            int(info.get("progress", 0)),
            str(info.get("message", "Working")),
            updated_at=info.get("updated_at"),
            preview=preview if isinstance(preview, str) else None,
        )
    if state == "RETRY":
        return _make(task_id, record, JobState.PROCESSING, 0, f"Retrying: {failure_message(info)}")
    if state == JobState.SUCCESS:
        return _make(task_id, record, JobState.SUCCESS, 100, "Done")
    if state == JobState.FAILURE:
        return _make(task_id, record, JobState.FAILURE, 0, failure_message(info))
    if state == JobState.REVOKED:
        return _make(task_id, record, JobState.REVOKED, 0, "Cancelled")
    # A state Celery may add that clients do not know: the job is on its way, as STARTED is.
    return _make(task_id, record, JobState.PROCESSING, 0, str(state).title())


def describe_queued(task_id: str, record: Mapping[str, str], view: QueueView) -> JobStatus:
    """The status of a queued job: its place in the queue, and when it may start."""
    queue = record["queue"]
    if view.position is None:  # taken off the queue, the worker's first update not yet written
        return _make(task_id, record, JobState.PROCESSING, 0, "Starting")
    message = f"Queued — {ordinal(view.position)} in the {queue} queue"
    if record.get("note"):
        message += f" ({record['note']})"
    eta = None
    if not view.workers:
        message += f"; no {queue} worker is running, so it waits until one starts"
    elif view.typical_runtime is not None:
        eta = round(start_estimate(view.position, view.workers, view.typical_runtime, view.running), 1)
        message += f"{STARTS_IN}{max(1, round(eta))} s"
    return _make(task_id, record, JobState.PENDING, 0, message, position=view.position, eta_seconds=eta)


class BatchItemStatus(BaseModel):
    """One item of a batch, as the batch's status lists it."""

    task_id: str
    name: str | None = Field(default=None, description="The item's name as given (a file name), if any")
    status: JobState
    progress: int = Field(ge=0, le=100)
    message: str


class BatchStatus(BaseModel):
    """A batch as the client, the REST API, the page and tests see it."""

    batch_id: str
    task_type: str
    status: JobState = Field(
        description="PENDING (no item started), PROCESSING, then SUCCESS (all succeeded), FAILURE (one or more "
        "failed) or REVOKED (the batch was cancelled), once every item has ended"
    )
    total: int
    progress: int = Field(ge=0, le=100, description="Over all items: an ended item counts 100")
    message: str = Field(description='e.g. "37 of 120 done · 2 failed"')
    counts: dict[JobState, int]
    items: list[BatchItemStatus]
    webhook: WebhookReport | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="With a webhook: how its deliveries went",
    )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def summarise_batch(
    batch_id: str,
    task_type: str,
    items: Sequence[BatchItemStatus],
    cancelled: bool,
    webhook: WebhookReport | None = None,
) -> BatchStatus:
    """The batch's aggregate status from its items' statuses."""
    counts = dict.fromkeys(JobState, 0)
    for item in items:
        counts[item.status] += 1
    total = len(items)
    ended = sum(counts[state] for state in FINISHED)
    progress = sum(100 if item.status in FINISHED else item.progress for item in items) // max(1, total)
    if ended == total:
        state = (
            JobState.REVOKED
            if cancelled
            else JobState.SUCCESS
            if counts[JobState.SUCCESS] == total
            else JobState.FAILURE
            if counts[JobState.FAILURE]
            else JobState.REVOKED
        )
    else:
        state = JobState.PENDING if counts[JobState.PENDING] == total else JobState.PROCESSING
    message = f"{counts[JobState.SUCCESS]} of {total} done"
    for label, key in (("failed", JobState.FAILURE), ("cancelled", JobState.REVOKED)):
        if counts[key]:
            message += f" · {counts[key]} {label}"
    if state == JobState.PROCESSING and counts[JobState.PROCESSING]:
        message += f" · {counts[JobState.PROCESSING]} running"
    return BatchStatus(
        batch_id=batch_id,
        task_type=task_type,
        status=state,
        total=total,
        progress=min(100, progress) if state.finished else min(99, progress),
        message=message,
        counts=counts,
        items=list(items),
        webhook=webhook,
    )


def describe_waiting(task_id: str, record: Mapping[str, str]) -> JobStatus:
    """A chain step waiting for the step before it."""
    step = int(record.get("step", 2))
    message = f"Waiting for step {step - 1} of {record.get('of', step)} to finish"
    return _make(task_id, record, JobState.PENDING, 0, message)


def summarise_chain(chain_id: str, steps: Sequence[JobStatus], cancelled: bool) -> JobStatus:
    """A chain's status from its steps': where it is ("Step 2 of 3 · Remove background — …"), progress
    over the whole chain; a failed step fails it (the message names the step), its result is the last's."""
    from pipelines import OPERATIONS

    total = len(steps)
    summary = [ChainStepStatus(task_id=s.task_id, task_type=s.task_type, status=s.status) for s in steps]
    index = next((i for i, s in enumerate(steps) if s.status != JobState.SUCCESS), total - 1)
    current = steps[index]
    title = OPERATIONS[current.task_type].title if current.task_type in OPERATIONS else current.task_type
    where = f"Step {index + 1} of {total} · {title}"
    common: dict[str, Any] = {"task_id": chain_id, "task_type": current.task_type, "queue": current.queue}
    common |= {"step": index + 1, "steps": summary}
    if current.status == JobState.FAILURE:
        message = f"{where} failed: {current.message}"
        return JobStatus(**common, status=JobState.FAILURE, progress=0, message=message, result_available=False)
    if current.status == JobState.REVOKED or (cancelled and not current.finished):
        message = f"Cancelled at step {index + 1} of {total}"
        return JobStatus(**common, status=JobState.REVOKED, progress=0, message=message, result_available=False)
    if current.status == JobState.SUCCESS:
        return JobStatus(**common, status=JobState.SUCCESS, progress=100, message="Done", result_available=True)
    progress = min(99, (index * 100 + current.progress) // total)
    state = JobState.PENDING if index == 0 and current.status == JobState.PENDING else JobState.PROCESSING
    queued = {"position": current.position, "eta_seconds": current.eta_seconds} if state == JobState.PENDING else {}
    return JobStatus(
        **common,
        **queued,
        status=state,
        progress=progress,
        message=f"{where} — {current.message}",
        result_available=False,
        updated_at=current.updated_at,
        preview=current.preview,
    )
