"""The progress callback's numbers: monotonic, 0-99 while running (100 comes only with SUCCESS)."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.run import JobHandedBack, ProgressReporter
from tasks.shutdown import handing_back


class Published:
    """Stands in for the Celery task and the job store: records what the reporter publishes."""

    ttl = 3600

    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = []

    def update_state(self, state: str, meta: dict[str, Any]) -> None:
        self.states.append(meta)

    def is_cancelled(self, job_id: str) -> bool:
        return False


def test_progress_is_monotonic_and_stops_at_99() -> None:
    published = Published()
    progress = ProgressReporter(published, published, "job")  # type: ignore[arg-type]
    for fraction in (0.0, 0.5, 0.4, 1.0, 1.7):
        progress(fraction, "working")
    assert [meta["progress"] for meta in published.states] == [0, 50, 50, 99, 99]


def test_a_stopping_worker_hands_the_job_back_at_the_next_step() -> None:
    published = Published()
    progress = ProgressReporter(published, published, "job")  # type: ignore[arg-type]
    handing_back.set()
    try:
        with pytest.raises(JobHandedBack):
            progress(0.5, "working")
    finally:
        handing_back.clear()
    assert published.states == []
