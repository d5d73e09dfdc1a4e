"""The job client: submit, status, result, cancel. REST and the page both go through it.

``jobs.client`` composes the concerns: ``submit`` (validate and enqueue), ``follow`` (status,
result, cancel), ``waiting`` (long polls), ``limits`` (who a submission counts against, the rate
limit) and ``catalogue`` (what the page may offer); ``status`` holds the one status model.
"""

from __future__ import annotations

from jobs.catalogue import background_models, engines, operations_by_queue, parameter_defaults, style_presets
from jobs.client import JobClient, get_client
from jobs.errors import AlreadyFinished, BatchNotFound, JobConflict, JobNotFound, RateLimited, ServiceUnavailable
from jobs.limits import requester
from jobs.status import BatchItemStatus, BatchStatus, JobStatus
from jobs.waiting import WAIT_MAX
from pipelines.validation import InvalidSubmission
from tasks.states import FINISHED, JobState

__all__ = [
    "FINISHED",
    "WAIT_MAX",
    "AlreadyFinished",
    "BatchItemStatus",
    "BatchNotFound",
    "BatchStatus",
    "InvalidSubmission",
    "JobClient",
    "JobConflict",
    "JobNotFound",
    "JobState",
    "JobStatus",
    "RateLimited",
    "ServiceUnavailable",
    "background_models",
    "engines",
    "get_client",
    "operations_by_queue",
    "parameter_defaults",
    "requester",
    "style_presets",
]
