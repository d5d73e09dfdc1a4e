"""Remove the background with rembg: one cached session per model per worker process.

Weights live in rembg's home, by default ATELIER_MODELS_DIR/rembg (U2NET_HOME, when set, wins).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import Field, field_validator

from pipelines.base import (
    DEFAULT_SETTING,
    Engine,
    JobInput,
    JobOutput,
    ModelUnavailable,
    Operation,
    Parameters,
    PipelineError,
    Progress,
    Stopwatch,
    engine_map,
)
from pipelines.models import cache_key, load_counts, load_once, onnx_providers
from settings import Settings

# rembg 2.0.86's local, single-mask sessions (rembg/sessions/__init__.py), checked here so a typo
# is a 400, not a failed job. Left out: the remote ones needing credentials (withoutbg,
# atlascloud), the *_custom ones needing a model_path, sam (needs prompt points),
# u2net_cloth_seg (three clothing masks stacked, not a cut-out) and birefnet-general-fp16
# (converts on first use with onnxconverter-common, not installed). Each reads `<name>.onnx`.
# The default, u2net, is Apache-2.0 and the fastest general model on a CPU (320×320 input);
# isnet-general-use (Apache-2.0) has finer edges and birefnet-* (MIT) the best quality, at
# several times the time. bria-rmbg (rembg's own default) is CC BY-NC 4.0: not for commercial use.
REMBG_MODELS = (
    "u2net",
    "u2netp",
    "u2net_human_seg",
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
    "bria-rmbg",
)


class BackgroundRemovalParameters(Parameters):
    model: str | None = Field(
        default=None,
        description="A rembg model name; default ATELIER_BACKGROUND_MODEL (u2net)",
        json_schema_extra={DEFAULT_SETTING: "background_model"},
    )
    alpha_matting: bool = Field(default=False, description="Refine soft edges (hair) with alpha matting; slower")
    bgcolor: list[int] | None = Field(
        default=None,
        description='Fill colour [r, g, b] or [r, g, b, a], 0-255 each (alpha 255 when left out), or "#RRGGBB[AA]"',
    )
    only_mask: bool = Field(default=False, description="Return the mask (white = subject) instead of the cut-out")
    post_process_mask: bool = Field(default=False, description="Smooth the mask's edges")

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str | None) -> str | None:
        if value is not None and value not in REMBG_MODELS:
            raise ValueError(f"Unknown model {value!r}; available: {', '.join(REMBG_MODELS)}")
        return value

    @field_validator("bgcolor", mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        return color_channels(value) if isinstance(value, str) else value

    @field_validator("bgcolor")
    @classmethod
    def _channels(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if len(value) not in (3, 4):
            raise ValueError(f"bgcolor must be [r, g, b] or [r, g, b, a], got {len(value)} numbers")
        if not all(0 <= channel <= 255 for channel in value):
            raise ValueError("bgcolor channels must each be 0-255")
        return [*value, 255] if len(value) == 3 else value


def color_channels(color: str) -> list[int]:
    """#RRGGBB, #RRGGBBAA or a colour picker's rgba(r, g, b, a) as four 0-255 channels."""
    value = color.strip().lstrip("#")
    try:
        if value.startswith("rgb"):
            parts = [float(part) for part in value[value.index("(") + 1 : value.index(")")].split(",")]
            alpha = round(parts[3] * 255) if len(parts) > 3 else 255
            return [round(parts[0]), round(parts[1]), round(parts[2]), alpha]
        if len(value) not in (6, 8):
            raise ValueError(value)
        channels = [int(value[i : i + 2], 16) for i in range(0, len(value), 2)]
    except (ValueError, IndexError):
        raise ValueError(f"bgcolor must be [r, g, b], [r, g, b, a], #RRGGBB or #RRGGBBAA, got {color[:20]!r}") from None
    return channels if len(channels) == 4 else [*channels, 255]


def rembg_home(settings: Settings) -> Path:
    return settings.rembg_home or settings.models_dir / "rembg"


def default_model(settings: Settings) -> str:
    model = settings.background_model
    if model not in REMBG_MODELS:
        raise PipelineError(f"ATELIER_BACKGROUND_MODEL is {model!r}; available: {', '.join(REMBG_MODELS)}")
    return model


def model_file(model: str, home: Path) -> Path | None:
    """Where rembg would find ``model``'s weights (its own folder, then the flat layout), or None."""
    for path in (home / "models" / model / f"{model}.onnx", home / f"{model}.onnx"):
        if path.is_file() and path.stat().st_size > 0:  # an empty file is a download that never happened
            return path
    return None


def require_model(model: str, home: Path) -> Path:
    """The weights' path; raises :class:`ModelUnavailable` at once instead of letting rembg download."""
    path = model_file(model, home)
    if path is None:
        wanted = home / "models" / model / f"{model}.onnx"
        raise ModelUnavailable(
            f"Background model {model!r} is not downloaded: {model}.onnx is not at {wanted} "
            f"(nor {home / f'{model}.onnx'}). "
            f"Run `ATELIER_BACKGROUND_MODEL={model} python app.py download-models`, or put the file there "
            "(rembg's releases: https://github.com/danielgatis/rembg/releases)."
        )
    return path


def _point_rembg_home(settings: Settings) -> Path:
    # rembg reads U2NET_HOME itself, deep inside its session classes; this is the one place we set it.
    home = rembg_home(settings)
    os.environ["U2NET_HOME"] = str(home)
    return home


def session_key(model: str, settings: Settings) -> str:
    """The ``load_once`` key (and ``load_counts`` entry) of ``model``'s session under ``settings``."""
    return cache_key("rembg", model, rembg_home(settings), settings.device)


def load_session(model: str, settings: Settings) -> Any:
    """A rembg session for ``model`` from the local weights (never a download)."""
    path = require_model(model, _point_rembg_home(settings))
    import rembg

    try:
        return rembg.new_session(model, providers=onnx_providers(settings))
    except Exception as exc:  # onnxruntime's own errors read like internals: say what to do instead
        raise ModelUnavailable(
            f"Background model {model!r} at {path} could not be loaded ({type(exc).__name__}); the file "
            f"looks corrupt or incomplete: delete it and run `ATELIER_BACKGROUND_MODEL={model} "
            "python app.py download-models`, or put a good copy there."
        ) from exc


def remove_background(job: JobInput, progress: Progress) -> JobOutput:
    """Cut the subject of ``image`` out onto transparency (or ``bgcolor``), or return its mask."""
    params: BackgroundRemovalParameters = job.parameters
    model = params.model or default_model(job.settings)
    progress(0.05, f"Loading background model {model}")
    watch = Stopwatch()
    key = session_key(model, job.settings)
    session = load_once(key, lambda: load_session(model, job.settings))
    watch.lap("load")

    import numpy as np
    import rembg

    if params.only_mask:
        next_step = "Post-processing the mask" if params.post_process_mask else "Mask ready"
    else:
        next_step = "Refining edges with alpha matting" if params.alpha_matting else "Composing the cut-out"
    reporting = _ReportingSession(session, progress, model, next_step, watch)
    result = rembg.remove(
        job.images["image"].convert("RGB"),
        session=reporting,
        alpha_matting=params.alpha_matting,
        bgcolor=tuple(params.bgcolor) if params.bgcolor else None,
        only_mask=params.only_mask,
        post_process_mask=params.post_process_mask,
    )
    if not isinstance(result, Image.Image) or reporting.mask is None:
        raise PipelineError(f"rembg returned {type(result).__name__} for model {model!r}, not an image")
    if not params.only_mask:
        result = result.convert("RGBA")
    progress(1.0, "Background removed")
    return JobOutput(
        image=result,
        metadata={
            "engine": "rembg",
            "model": model,
            "foreground_fraction": round(float(np.asarray(reporting.mask).mean()) / 255, 4),
            "model_loads_in_process": load_counts[key],
            "timings": watch.lap("compose"),
        },
    )


class _ReportingSession:
    """Wraps a rembg session so progress can tell inference from composing inside ``rembg.remove``."""

    def __init__(self, session: Any, progress: Progress, model: str, next_step: str, watch: Stopwatch) -> None:
        self.session, self.progress, self.model, self.next_step = session, progress, model, next_step
        self.watch = watch  # its "infer" lap ends when the mask is there
        self.mask: Image.Image | None = None

    def predict(self, image: Image.Image, *args: Any, **kwargs: Any) -> list[Image.Image]:
        self.progress(0.2, f"Finding the subject ({self.model})")
        masks: list[Image.Image] = self.session.predict(image, *args, **kwargs)
        if len(masks) != 1:
            raise PipelineError(f"Model {self.model!r} gave {len(masks)} masks; background removal needs one")
        self.mask = masks[0]
        self.watch.lap("infer")
        self.progress(0.7, self.next_step)
        return masks


def download(settings: Settings) -> list[str]:
    """Fetch the default background model with rembg's own downloader."""
    model = default_model(settings)
    home = _point_rembg_home(settings)
    existing = model_file(model, home)
    if existing is not None:
        return [f"{model}: {existing} (already there)"]
    from rembg.sessions import sessions

    try:
        path = sessions[model].download_models()
    except Exception as exc:  # pooch raises requests' errors, ValueError on a bad hash, ...
        raise PipelineError(
            f"could not download {model}.onnx into {home} ({type(exc).__name__}: {str(exc)[:200]}); "
            "check the network or put the file there by hand"
        ) from None
    return [f"{model}: {path}"]


class RembgEngine(Engine):
    """rembg's sessions; ``parameters.model`` picks the network (default ATELIER_BACKGROUND_MODEL)."""

    name = "rembg"

    def is_ready(self, settings: Settings) -> bool:
        try:
            return model_file(default_model(settings), rembg_home(settings)) is not None
        except PipelineError:  # ATELIER_BACKGROUND_MODEL names no rembg model
            return False

    def download(self, settings: Settings) -> list[str]:
        return download(settings)

    def run(self, job: JobInput, progress: Progress) -> JobOutput:
        return remove_background(job, progress)


OPERATION = Operation(
    name="background_removal",
    queue="cpu",
    title="Remove background",
    parameters=BackgroundRemovalParameters,
    engines=engine_map(RembgEngine()),
    required_images=("image",),
)
