"""Remove an object: inpaint the white area of ``mask``.

Engines: ``lama`` (pipelines/lama.py), ``telea`` (OpenCV, no weights) and ``diffusion`` (inpainting
on the generation model, pipelines/diffusion.py). Default: the first that can run here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from pydantic import Field

from pipelines.base import (
    JobInput,
    JobOutput,
    JobRequest,
    Operation,
    Parameters,
    Progress,
    Stopwatch,
    engine_choice,
    engine_map,
)
from pipelines.diffusion import decoder_models, inpaint, model_present
from pipelines.downloads import Builtin, Model
from pipelines.hub import generation_model
from pipelines.images import ROTATED, with_alpha_of
from pipelines.inpainting import InpaintEngine, mask_array, rgb_array
from pipelines.lama import LAMA_FILE as LAMA_FILE  # where big-lama.pt goes, under ATELIER_MODELS_DIR
from pipelines.lama import LamaEngine
from settings import Settings

DIFFUSION_PROMPT = "background"  # what the diffusion engine paints when the job has no prompt
NO_LAMA = "LaMa's weights are not installed"
FALLBACK_NOTE = f"Done with the basic engine (OpenCV) — {NO_LAMA}"  # the result's metadata, the page's status


def inpaint_telea(image: Image.Image, mask: np.ndarray, radius: int) -> Image.Image:
    import cv2

    bgr = cv2.cvtColor(rgb_array(image), cv2.COLOR_RGB2BGR)
    result = cv2.inpaint(bgr, mask.astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)
    return with_alpha_of(image, Image.fromarray(cv2.cvtColor(result, cv2.COLOR_BGR2RGB)))


class TeleaEngine(InpaintEngine):
    """OpenCV's Telea inpainting: no weights, good on small objects against plain surroundings."""

    name = "telea"
    weight_free = True
    library = "cv2"

    def models(self, settings: Settings) -> list[Model]:
        return [Builtin(name="opencv-telea", license="Apache-2.0", library="cv2", default=True)]

    def inpaint(self, job: JobInput, mask: np.ndarray, progress: Progress) -> JobOutput:
        # Chosen by "auto" because LaMa cannot run here: the job says so, not just "Done".
        fallback = job.parameters.engine is None and not LamaEngine().is_ready(job.settings)
        progress(0.1, "Removing object with OpenCV (Telea)" + (f" — {NO_LAMA}" if fallback else ""))
        watch = Stopwatch()
        result = inpaint_telea(job.images["image"], mask, job.parameters.radius)
        progress(1.0, "Object removed")
        metadata = {"engine": self.name, "masked_pixels": int(mask.sum()), "timings": watch.lap("run")}
        if fallback:
            metadata["fallback"] = {"instead_of": "lama", "reason": NO_LAMA, "note": FALLBACK_NOTE}
        return JobOutput(image=result, metadata=metadata)


class DiffusionInpaintEngine(InpaintEngine):
    """Inpainting on the generation model, after the prompt (default ``background``)."""

    name = "diffusion"
    queue = "gpu"  # where the diffusion model is already loaded, not the cpu queue
    library = "diffusers"

    def is_ready(self, settings: Settings) -> bool:
        return model_present(settings)

    def models(self, settings: Settings) -> list[Model]:
        return [generation_model(settings), *decoder_models(settings)]

    def inpaint(self, job: JobInput, mask: np.ndarray, progress: Progress) -> JobOutput:
        prompt = job.prompt or DIFFUSION_PROMPT
        result, metadata = inpaint(job.images["image"], mask, prompt, progress, job.settings)
        progress(1.0, "Object removed")
        metadata |= {"engine": self.name, "masked_pixels": int(mask.sum())}
        return JobOutput(result, metadata, prompt_used=prompt)


ENGINES = engine_map(LamaEngine(), TeleaEngine(), DiffusionInpaintEngine())

if TYPE_CHECKING:
    RemovalEngine = str
else:
    RemovalEngine = engine_choice(ENGINES)


class ObjectRemovalParameters(Parameters):
    engine: RemovalEngine | None = Field(
        default=None, description="Default: lama when its weights are present, else telea"
    )
    dilate: int = Field(default=0, ge=0, le=64, description="Grow the mask by this many pixels")
    radius: int = Field(default=5, ge=1, le=50, description="Telea's neighbourhood radius in pixels")


def check(job: JobRequest) -> dict[str, list[str]]:
    image, mask = job.images["image"], job.images["mask"]
    if image.size != mask.size:
        shown = " as displayed (its EXIF orientation turns it)" if image.info.get(ROTATED) else ""
        size = f"mask is {mask.width}×{mask.height} but image is {image.width}×{image.height}{shown}"
        return {"mask": [f"{size}; they must match"]}
    masked = mask_array(mask)
    if not masked.any():
        return {"mask": ["mask has no white pixels: nothing to remove (white = remove)"]}
    if masked.all():
        return {"mask": ["mask covers the whole image: nothing is left to fill it from (white = remove)"]}
    return {}


def remove_object(job: JobInput, progress: Progress) -> JobOutput:
    """Fill the masked area of ``image`` from its surroundings, with the engine the job names or the default."""
    return OPERATION.run(job, progress)


OPERATION = Operation(
    name="object_removal",
    queue="cpu",
    title="Remove object",
    parameters=ObjectRemovalParameters,
    engines=ENGINES,
    required_images=("image", "mask"),
    prompt="optional",  # the diffusion engine's: what to paint instead (default "background")
    check=check,
    check_reads=("mask",),
)
