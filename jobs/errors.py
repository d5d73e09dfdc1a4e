"""What the job client raises. Callers (REST, the page) turn these into answers; none of them
needs to know that Redis is underneath."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import redis
from kombu.exceptions import OperationalError

if TYPE_CHECKING:
    from jobs.status import JobStatus

# What "Redis is away" looks like from redis-py and from kombu (the broker side).
UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OperationalError)


class JobNotFound(LookupError):
    """Unknown, malformed or expired task id."""


class BatchNotFound(LookupError):
    """Unknown, malformed or expired batch id."""


class ServiceUnavailable(RuntimeError):
    """Redis (or the broker) cannot be reached."""


class RateLimited(RuntimeError):
    """Too many submissions from one client; ``retry_after`` seconds until its window resets."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class JobConflict(RuntimeError):
    """The job is not in a state that allows the request; ``status`` says where it is."""

    def __init__(self, message: str, status: JobStatus) -> None:
        super().__init__(message)
        self.status = status


class AlreadyFinished(JobConflict):
    """A cancel of a job that already ended; its result (if any) is kept."""


@contextmanager
def redis_reachable() -> Iterator[None]:
    """Turn "Redis unreachable" from redis-py or kombu into :class:`ServiceUnavailable`."""
    try:
        yield
    except UNREACHABLE as exc:
        raise ServiceUnavailable(str(exc)) from exc
