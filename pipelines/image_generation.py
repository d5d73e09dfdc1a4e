"""Text to image with diffusers (the engine arrives with the diffusion issue)."""

from __future__ import annotations

from pydantic import Field, field_validator

from pipelines.base import JobInput, JobOutput, ModelUnavailable, Operation, Parameters, Progress
from settings import get_settings


def _multiple_of_8(value: int, name: str) -> int:
    if value % 8:
        raise ValueError(f"{name} must be a multiple of 8 (got {value}; try {round(value / 8) * 8})")
    return value


class ImageGenerationParameters(Parameters):
    negative_prompt: str | None = Field(default=None, max_length=5000)
    width: int = Field(default=512, ge=64, le=2048, description="Pixels, a multiple of 8")
    height: int = Field(default=512, ge=64, le=2048, description="Pixels, a multiple of 8")
    steps: int = Field(default=4, ge=1, le=150)
    guidance_scale: float = Field(default=0.0, ge=0.0, le=30.0)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1, description="Same seed, same image")
    num_images: int = Field(default=1, ge=1, le=4)

    @field_validator("width")
    @classmethod
    def _width(cls, value: int) -> int:
        return _multiple_of_8(value, "width")

    @field_validator("height")
    @classmethod
    def _height(cls, value: int) -> int:
        return _multiple_of_8(value, "height")


def generate_image(job: JobInput, progress: Progress) -> JobOutput:
    """Generate an image from ``prompt``."""
    raise ModelUnavailable(
        f"Image generation has no engine in this build yet (model {get_settings().generation_model!r} "
        "is configured but the diffusers engine is not installed)."
    )


OPERATION = Operation(
    name="image_generation",
    queue="gpu",
    title="Generate",
    parameters=ImageGenerationParameters,
    run=generate_image,
    prompt="required",
    engines=("diffusers",),
)
