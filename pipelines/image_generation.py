"""Text to image with diffusers (default SD-Turbo: 4 steps, no guidance); see pipelines/diffusion.py."""

from __future__ import annotations

import math

from PIL import Image
from pydantic import Field, field_validator

from pipelines.base import Engine, JobInput, JobOutput, Operation, Parameters, Progress, engine_map
from pipelines.diffusion import (
    ENGINE,
    StepProgress,
    decoder_models,
    generators,
    load_with_progress,
    model_present,
    random_seed,
    run_pipeline,
)
from pipelines.downloads import Model
from pipelines.hub import generation_model
from pipelines.png_info import sampler_name
from settings import Settings


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
    num_images: int = Field(default=1, ge=1, le=4, description="More than one: a grid, with each image's seed")

    @field_validator("width")
    @classmethod
    def _width(cls, value: int) -> int:
        return _multiple_of_8(value, "width")

    @field_validator("height")
    @classmethod
    def _height(cls, value: int) -> int:
        return _multiple_of_8(value, "height")


def image_seeds(seed: int, count: int) -> list[int]:
    """Image i of a batch uses seed + i, so each image of a grid can be made again on its own."""
    return [(seed + index) % 2**32 for index in range(count)]


def grid(images: list[Image.Image]) -> tuple[Image.Image, int, int]:
    """Images side by side (four as 2×2), left to right then top to bottom, as in ``seeds``."""
    columns = 2 if len(images) == 4 else len(images)
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    sheet = Image.new("RGB", (columns * width, rows * height))
    for index, image in enumerate(images):
        sheet.paste(image, ((index % columns) * width, (index // columns) * height))
    return sheet, columns, rows


def generate_image(job: JobInput, progress: Progress) -> JobOutput:
    """Generate ``num_images`` images from ``prompt``; several come back as one grid image."""
    params: ImageGenerationParameters = job.parameters
    model, watch = load_with_progress(progress, job.settings, "Loading the generation model")
    seed = params.seed if params.seed is not None else random_seed()
    seeds = image_seeds(seed, params.num_images)
    bridge = StepProgress(progress, "Generating image" if params.num_images == 1 else "Generating images")
    images = run_pipeline(
        model.text_to_image,
        bridge,
        prompt=job.prompt,
        negative_prompt=params.negative_prompt,
        width=params.width,
        height=params.height,
        num_inference_steps=params.steps,
        guidance_scale=params.guidance_scale,
        num_images_per_prompt=params.num_images,
        generator=generators(seeds),
    )
    metadata = {
        **model.metadata(),
        "sampler": sampler_name(model.text_to_image.scheduler),
        "seed": seed,
        "steps": bridge.steps,
        "timings": watch.lap("run"),
    }
    if len(images) == 1:
        image = images[0]
    else:
        image, columns, rows = grid(images)
        metadata |= {"seeds": seeds, "grid": {"columns": columns, "rows": rows}}
    progress(1.0, "Image generated" if len(images) == 1 else f"{len(images)} images generated")
    return JobOutput(image=image, metadata=metadata, prompt_used=job.prompt)


class DiffusersEngine(Engine):
    """Text to image on the shared diffusion model; its download also serves the other diffusion engines."""

    name = ENGINE
    library = "diffusers"

    def is_ready(self, settings: Settings) -> bool:
        return model_present(settings)

    def models(self, settings: Settings) -> list[Model]:
        return [generation_model(settings), *decoder_models(settings)]

    def run(self, job: JobInput, progress: Progress) -> JobOutput:
        return generate_image(job, progress)


OPERATION = Operation(
    name="image_generation",
    queue="gpu",
    title="Generate",
    parameters=ImageGenerationParameters,
    engines=engine_map(DiffusersEngine()),
    prompt="required",
)
