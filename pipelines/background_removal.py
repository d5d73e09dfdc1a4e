"""Remove the background with rembg: one cached session per model per worker process.

Weights live in rembg's home, by default ATELIER_MODELS_DIR/rembg (U2NET_HOME, when set, wins).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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
from pipelines.downloads import FileModel, Model, Source
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
# Each: its file at rembg's release, the checksum rembg checks it with, its size in MB (approximate)
# and its licence. The file is saved as <rembg home>/models/<name>/<name>.onnx, rembg's own layout.
REMBG_RELEASE = "https://github.com/danielgatis/rembg/releases/download/v0.0.0"
REMBG_FILES: dict[str, tuple[str, str, float, str]] = {
    "u2net": ("u2net.onnx", "md5:60024c5c889badc19c04ad937298a77b", 176, "Apache-2.0"),
    "u2netp": ("u2netp.onnx", "md5:8e83ca70e441ab06c318d82300c84806", 4.6, "Apache-2.0"),
    "u2net_human_seg": ("u2net_human_seg.onnx", "md5:c09ddc2e0104f800e3e1bb4652583d1f", 176, "Apache-2.0"),
    "silueta": ("silueta.onnx", "md5:55e59e0d8062d2f5d013f4725ee84782", 44, "Apache-2.0"),
    "isnet-general-use": ("isnet-general-use.onnx", "md5:fc16ebd8b0c10d971d3513d564d01e29", 179, "Apache-2.0"),
    "isnet-anime": ("isnet-anime.onnx", "md5:6f184e756bb3bd901c8849220a83e38e", 176, "Apache-2.0"),
    "birefnet-general": ("BiRefNet-general-epoch_244.onnx", "md5:7a35a0141cbbc80de11d9c9a28f52697", 973, "MIT"),
    "birefnet-general-lite": (
        "BiRefNet-general-bb_swin_v1_tiny-epoch_232.onnx",
        "md5:4fab47adc4ff364be1713e97b7e66334",
        224,
        "MIT",
    ),
    "birefnet-portrait": ("BiRefNet-portrait-epoch_150.onnx", "md5:c3a64a6abf20250d090cd055f12a3b67", 973, "MIT"),
    "birefnet-dis": ("BiRefNet-DIS-epoch_590.onnx", "md5:2d4d44102b446f33a4ebb2e56c051f2b", 973, "MIT"),
    "birefnet-hrsod": ("BiRefNet-HRSOD_DHU-epoch_115.onnx", "md5:c017ade5de8a50ff0fd74d790d268dda", 973, "MIT"),
    "birefnet-cod": ("BiRefNet-COD-epoch_125.onnx", "md5:f6d0d21ca89d287f17e7afe9f5fd3b45", 973, "MIT"),
    "birefnet-massive": (
        "BiRefNet-massive-TR_DIS5K_TR_TEs-epoch_420.onnx",
        "md5:33e726a2136a3d59eb0fdf613e31e3e9",
        973,
        "MIT",
    ),
    "bria-rmbg": (
        "bria-rmbg-2.0.onnx",
        "sha256:5b486f08200f513f460da46dd701db5fbb47d79b4be4b708a19444bcd4e79958",
        1024,
        "CC-BY-NC-4.0 (non-commercial)",
    ),
}
REMBG_MODELS = tuple(REMBG_FILES)


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
            f"Run `python app.py download-models {model}`, or put the file there "
            "(rembg's releases: https://github.com/danielgatis/rembg/releases)."
        )
    return path


@dataclass(frozen=True, kw_only=True)
class RembgModel(FileModel):
    """One rembg network, in rembg's layout under its home (the flat layout of older versions counts too)."""

    def target(self, settings: Settings) -> Path:
        return rembg_home(settings) / "models" / self.name / f"{self.name}.onnx"

    def location(self, settings: Settings) -> Path | None:
        return model_file(self.name, rembg_home(settings))

    def loaded_key(self, settings: Settings) -> str | None:
        return session_key(self.name, settings)


def rembg_models(settings: Settings) -> list[Model]:
    models: list[Model] = []
    for name, (file, checksum, megabytes, license) in REMBG_FILES.items():
        algorithm, _, digest = checksum.partition(":")
        source = Source("rembg", f"{name}.onnx", f"{REMBG_RELEASE}/{file}", **{algorithm: digest})
        models.append(
            RembgModel(
                name=name,
                license=license,
                size=int(megabytes * 1e6),
                default=name == settings.background_model,
                source=source,
            )
        )
    return models


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
            f"looks corrupt or incomplete: delete it and run `python app.py download-models {model}`, "
            "or put a good copy there."
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


class RembgEngine(Engine):
    """rembg's sessions; ``parameters.model`` picks the network (default ATELIER_BACKGROUND_MODEL)."""

    name = "rembg"
    library = "rembg"

    def is_ready(self, settings: Settings) -> bool:
        try:
            return model_file(default_model(settings), rembg_home(settings)) is not None
        except PipelineError:  # ATELIER_BACKGROUND_MODEL names no rembg model
            return False

    def models(self, settings: Settings) -> list[Model]:
        return rembg_models(settings)

    def models_for(self, job: JobInput) -> list[Model]:
        wanted = job.parameters.model or default_model(job.settings)
        return [model for model in self.models(job.settings) if model.name == wanted]

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
