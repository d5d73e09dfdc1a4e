"""Swap faces with insightface (the engine arrives with the face-swap issue)."""

from __future__ import annotations

from pydantic import Field

from pipelines.base import JobInput, JobOutput, ModelUnavailable, Operation, Parameters, Progress


class FaceSwapParameters(Parameters):
    face_index: int | None = Field(
        default=None, ge=0, description="Which target face to replace (0 = leftmost); unset: all faces"
    )


def swap_faces(job: JobInput, progress: Progress) -> JobOutput:
    """Put the largest face of ``image`` onto the faces of ``target_image``."""
    raise ModelUnavailable("Face swap has no engine in this build yet (insightface is not installed).")


OPERATION = Operation(
    name="face_swap",
    queue="gpu",
    title="Face swap",
    parameters=FaceSwapParameters,
    run=swap_faces,
    required_images=("image", "target_image"),
    engines=("insightface",),
)
