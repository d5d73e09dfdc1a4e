"""A test-only operation with many timed steps, so cancellation mid-run can be observed.

It goes through the real registry, task, Redis and worker; only the engine is a stand-in.
"""

from __future__ import annotations

import time

from pydantic import Field

from pipelines import OPERATIONS
from pipelines.base import Engine, JobInput, JobOutput, Operation, Parameters, PipelineError, Progress, engine_map
from tasks.store import connect


class StepsParameters(Parameters):
    steps: int = Field(default=20, ge=1, le=10_000)
    delay: float = Field(default=0.1, ge=0, le=10)
    fail: bool = False
    crash: bool = False
    preview: bool = False  # publish the input as each step's preview


def executions_key(job_id: str) -> str:
    return f"test:executions:{job_id}"


def run_steps(job: JobInput, progress: Progress) -> JobOutput:
    params: StepsParameters = job.parameters
    marker = job.prompt or "unnamed"
    connect(job.settings.broker_url).incr(executions_key(marker))
    for step in range(params.steps):
        preview = job.images["image"] if params.preview else None
        progress(step / params.steps, f"Step {step + 1}/{params.steps}", preview)
        time.sleep(params.delay)
    if params.fail:
        raise PipelineError("Asked to fail")
    if params.crash:
        raise ZeroDivisionError("division by zero")
    return JobOutput(image=job.images["image"].convert("RGB"), metadata={"steps": params.steps})


class StepsEngine(Engine):
    """A stand-in engine: sleeps through its steps, reporting each."""

    name = "steps"

    def run(self, job: JobInput, progress: Progress) -> JobOutput:
        return run_steps(job, progress)


OPERATION = Operation(
    name="test_steps",
    queue="cpu",
    title="Test steps",
    parameters=StepsParameters,
    engines=engine_map(StepsEngine()),
    required_images=("image",),
    prompt="optional",
)


def register() -> None:
    OPERATIONS.setdefault(OPERATION.name, OPERATION)
