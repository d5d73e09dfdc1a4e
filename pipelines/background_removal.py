"""Remove the background with rembg (the engine arrives with the rembg issue)."""

from __future__ import annotations

from pydantic import Field, field_validator

from pipelines.base import JobInput, JobOutput, ModelUnavailable, Operation, Parameters, Progress

# rembg's session names (rembg/sessions/__init__.py); checked here so a typo is a 400, not a failed job.
REMBG_MODELS = (
    "u2net",
    "u2netp",
    "u2net_human_seg",
    "u2net_cloth_seg",
    "silueta",
    "isnet-general-use",
    "isnet-anime",
    "birefnet-general",
    "birefnet-general-lite",
    "birefnet-portrait",
    "birefnet-dis",
    "birefnet-hrsod",
    "birefnet-cod",
    "birefnet-massive",
)


class BackgroundRemovalParameters(Parameters):
    model: str = Field(default="u2net", description="A rembg session name")
    alpha_matting: bool = False
    bgcolor: tuple[int, int, int, int] | None = Field(default=None, description="RGBA fill, 0-255 each")
    only_mask: bool = False
    post_process_mask: bool = False

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in REMBG_MODELS:
            raise ValueError(f"Unknown model {value!r}; available: {', '.join(REMBG_MODELS)}")
        return value

    @field_validator("bgcolor")
    @classmethod
    def _channels(cls, value: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if value is not None and not all(0 <= channel <= 255 for channel in value):
            raise ValueError("bgcolor channels must each be 0-255")
        return value


def remove_background(job: JobInput, progress: Progress) -> JobOutput:
    """Cut the subject of ``image`` out onto transparency (or ``bgcolor``)."""
    raise ModelUnavailable("Background removal has no engine in this build yet (rembg is not installed).")


OPERATION = Operation(
    name="background_removal",
    queue="cpu",
    title="Remove background",
    parameters=BackgroundRemovalParameters,
    run=remove_background,
    required_images=("image",),
    engines=("rembg",),
)
