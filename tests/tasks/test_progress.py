"""The progress callback and its publisher: monotonic, 0-99 while running (100 comes only with SUCCESS),
published off the job's thread, nothing for a job that ends at once, nothing after its end."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from pipelines.base import JobCancelled
from tasks.progress import EVERY, QUIET, JobHandedBack, ProgressReporter, Publisher, RunningJob
from tasks.shutdown import handing_back
from tests.support.stack import wait_until


class Claims:
    """Stands in for tasks.claims.JobClaims: records what is published, answers a set outcome."""

    def __init__(self, outcome: str | None = None) -> None:
        self.states: list[dict[str, Any] | None] = []
        self.outcome = outcome
        self.lock = threading.Lock()

    def publish(self, job_id: str, meta_key: str, state: dict[str, Any] | None, touch: bool = False) -> str | None:
        with self.lock:
            self.states.append(state)
        return self.outcome

    def published(self) -> list[dict[str, Any]]:
        with self.lock:
            return [state["result"] for state in self.states if state is not None]


def running(claims: Claims) -> RunningJob:
    return RunningJob("job", "celery-task-meta-job", claims, touch_every=30.0)  # type: ignore[arg-type]


def test_progress_is_monotonic_and_stops_at_99() -> None:
    job = running(Claims())
    progress = ProgressReporter(job)
    seen = []
    for fraction in (0.0, 0.5, 0.4, 1.0, 1.7):
        progress(fraction, "working")
        assert job.latest is not None
        seen.append(job.latest[0])
    assert seen == [0, 50, 50, 99, 99]


def test_a_stopping_worker_hands_the_job_back_at_the_next_step() -> None:
    progress = ProgressReporter(running(Claims()))
    handing_back.set()
    try:
        with pytest.raises(JobHandedBack):
            progress(0.5, "working")
    finally:
        handing_back.clear()


def test_a_job_that_ends_at_once_publishes_nothing() -> None:
    claims, publisher = Claims(), Publisher()
    job = running(claims)
    publisher.watch(job)
    ProgressReporter(job)(0.5, "working")
    publisher.forget(job)
    time.sleep(QUIET + 2 * EVERY)
    assert claims.states == []


def test_a_longer_job_publishes_its_latest_state_and_nothing_after_its_end() -> None:
    claims, publisher = Claims(), Publisher()
    job = running(claims)
    progress = ProgressReporter(job)
    publisher.watch(job)
    progress(0.1, "loading")
    progress(0.3, "working")  # the latest state is what is published
    wait_until(claims.published, 5, interval=0.01, what="the first publication")
    assert [(state["progress"], state["message"]) for state in claims.published()] == [(30, "working")]
    progress(0.6, "almost")
    wait_until(lambda: claims.published()[-1]["progress"] == 60, 5, interval=0.01, what="the next publication")
    publisher.forget(job)
    count = len(claims.states)
    progress(0.9, "after the end")
    time.sleep(EVERY * 2)
    assert len(claims.states) == count


def test_a_cancel_seen_by_the_publisher_stops_the_job_at_its_next_step() -> None:
    claims, publisher = Claims(outcome="REVOKED"), Publisher()
    job = running(claims)
    progress = ProgressReporter(job)
    publisher.watch(job)
    progress(0.1, "working")
    deadline = time.monotonic() + 2
    with pytest.raises(JobCancelled):
        while time.monotonic() < deadline:
            progress(0.2, "working")
            time.sleep(0.01)
    publisher.forget(job)
