"""The states a job goes through, as clients see them: one enum for the client, REST, the page and tests."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """A job's state. ``PENDING``: queued; ``PROCESSING``: running (Celery's ``STARTED`` shows as
    ``PROCESSING`` at 0 %); then one of the three final states."""

    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobState.SUCCESS, JobState.FAILURE, JobState.REVOKED})
