"""The operation registry: the single list of what Atelier can do.

Adding an operation = one module in this package + one line here. Light to import: engines
import their heavy libraries inside their functions.
"""

from __future__ import annotations

from pipelines import background_removal, face_swap, image_generation, object_removal, style_transfer
from pipelines.base import JobInput, JobOutput, Operation, PipelineError, Progress

OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        image_generation.OPERATION,
        face_swap.OPERATION,
        background_removal.OPERATION,
        object_removal.OPERATION,
        style_transfer.OPERATION,
    )
}


__all__ = ["OPERATIONS", "JobInput", "JobOutput", "Operation", "PipelineError", "Progress"]
