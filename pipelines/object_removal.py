"""Remove an object: inpaint the white area of ``mask``.

Engines: ``telea`` (OpenCV, no weights), ``lama`` (pipelines/lama.py) and ``diffusion`` (its own issue).
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field

from pipelines.base import JobInput, JobOutput, Operation, Parameters, Progress
from pipelines.images import ROTATED
from pipelines.lama import LAMA_FILE as LAMA_FILE  # where big-lama.pt goes, under ATELIER_MODELS_DIR
from pipelines.lama import bounding_box, download_lama, get_lama, inpaint_lama, lama_path

ENGINES = ("lama", "telea", "diffusion")
DIFFUSION_PROMPT = "background"  # what the diffusion engine paints when the job has no prompt


class ObjectRemovalParameters(Parameters):
    engine: Literal["lama", "telea", "diffusion"] | None = Field(
        default=None, description="Default: lama when its weights are present, else telea"
    )
    dilate: int = Field(default=0, ge=0, le=64, description="Grow the mask by this many pixels")
    radius: int = Field(default=5, ge=1, le=50, description="Telea's neighbourhood radius in pixels")


def mask_array(mask: Image.Image) -> np.ndarray:
    """A boolean array, True where the mask is white (alpha counts as transparent = keep)."""
    if mask.mode in ("RGBA", "LA"):
        gray = np.asarray(mask.convert("LA"))
        return (gray[..., 0] > 127) & (gray[..., 1] > 127)
    return np.asarray(mask if mask.mode == "L" else mask.convert("L")) > 127


def check(job: JobInput) -> dict[str, list[str]]:
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


def default_engine() -> str:
    return "lama" if lama_path().is_file() else "telea"


def inpaint_telea(image: Image.Image, mask: np.ndarray, radius: int) -> Image.Image:
    import cv2

    rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))  # convert() copies even then
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    result = cv2.inpaint(bgr, mask.astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)
    out = Image.fromarray(cv2.cvtColor(result, cv2.COLOR_BGR2RGB))
    if image.mode in ("RGBA", "LA"):
        out.putalpha(image.getchannel("A"))
    return out


def remove_object(job: JobInput, progress: Progress) -> JobOutput:
    """Fill the masked area of ``image`` from its surroundings."""
    params: ObjectRemovalParameters = job.parameters
    engine = params.engine or default_engine()
    mask = mask_array(job.images["mask"])
    if params.dilate:
        import cv2

        kernel = np.ones((2 * params.dilate + 1, 2 * params.dilate + 1), np.uint8)
        mask = cv2.dilate(mask.astype(np.uint8), kernel) > 0
    if engine == "lama":
        return remove_with_lama(job.images["image"], mask, progress)
    if engine == "diffusion":
        from pipelines.diffusion import inpaint

        prompt = job.prompt or DIFFUSION_PROMPT
        result, metadata = inpaint(job.images["image"], mask, prompt, progress)
        progress(1.0, "Object removed")
        metadata |= {"engine": "diffusion", "masked_pixels": int(mask.sum())}
        return JobOutput(result, metadata, prompt_used=prompt)
    progress(0.1, "Removing object with OpenCV (Telea)")
    started = time.perf_counter()
    result = inpaint_telea(job.images["image"], mask, params.radius)
    progress(1.0, "Object removed")
    return JobOutput(
        image=result,
        metadata={
            "engine": engine,
            "masked_pixels": int(mask.sum()),
            "timings": {"run": round(time.perf_counter() - started, 4)},
        },
    )


def remove_with_lama(image: Image.Image, mask: np.ndarray, progress: Progress) -> JobOutput:
    progress(0.05, "Loading LaMa")
    started = time.perf_counter()
    model = get_lama()
    loaded = time.perf_counter()
    filled = inpaint_lama(model, np.asarray(image if image.mode == "RGB" else image.convert("RGB")), mask, progress)
    result = Image.fromarray(filled.image)
    if image.mode in ("RGBA", "LA"):
        result.putalpha(image.getchannel("A"))
    progress(1.0, "Object removed")
    return JobOutput(
        image=result,
        metadata={
            "engine": "lama",
            "device": model.device,
            "masked_pixels": int(mask.sum()),
            # The area LaMa worked on (the union of its crops); pixels outside it are never touched.
            "crop": list(bounding_box(filled.crops)),
            "crops": [list(box) for box in filled.crops],
            "model_input_sizes": [list(size) for size in filled.model_sizes],
            "model_loads_in_process": model.loads_in_process,
            "timings": {"load": round(loaded - started, 4), "run": round(time.perf_counter() - loaded, 4)},
        },
    )


OPERATION = Operation(
    name="object_removal",
    queue="cpu",
    title="Remove object",
    parameters=ObjectRemovalParameters,
    run=remove_object,
    required_images=("image", "mask"),
    engines=ENGINES,
    prompt="optional",  # the diffusion engine's: what to paint instead (default "background")
    check=check,
    check_reads=("mask",),
    engine_queues={"diffusion": "gpu"},
    download=download_lama,
)
