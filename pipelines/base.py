"""The small interface every operation shares. Imports nothing heavy: the web process reads it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from PIL import Image
from pydantic import BaseModel, ConfigDict

ImageField = Literal["image", "target_image", "mask", "style_image"]
IMAGE_FIELDS: tuple[ImageField, ...] = ("image", "target_image", "mask", "style_image")


class Progress(Protocol):
    """``progress(fraction, message, preview=None)``; raises :class:`JobCancelled` once the job was cancelled.

    ``preview`` is an optional small image of the work so far (a diffusion step's latents, say);
    clients see it as ``preview`` in ``/status/`` while the job runs.
    """

    def __call__(self, fraction: float, message: str, preview: Image.Image | None = None) -> None: ...


def no_progress(fraction: float, message: str, preview: Image.Image | None = None) -> None:
    """A progress callback for plain scripts."""


class PipelineError(Exception):
    """A failure whose message is meant for the user (bad input found late, missing weights)."""


class ModelUnavailable(PipelineError):
    """The engine's weights or library are not there; the message says how to provide them."""


class JobCancelled(Exception):
    """Raised by a progress callback when the job was cancelled; pipelines let it through."""


class Parameters(BaseModel):
    """Base of every operation's ``parameters`` schema: strict types, unknown names refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


@dataclass(frozen=True)
class JobInput:
    """What an operation runs on: decoded images by field, the prompt and validated parameters."""

    images: Mapping[str, Image.Image]
    parameters: Any
    prompt: str | None = None


@dataclass
class JobOutput:
    """An operation's result: one image plus JSON-able metadata (engine, timings, ...)."""

    image: Image.Image
    metadata: dict[str, Any] = field(default_factory=dict)
    prompt_used: str | None = None


Check = Callable[[JobInput], dict[str, list[str]]]


def no_checks(job: JobInput) -> dict[str, list[str]]:
    return {}


@dataclass(frozen=True)
class Operation:
    """One entry of the registry: everything the API, the queue and the worker need to know."""

    name: str
    queue: Literal["gpu", "cpu"]
    title: str
    parameters: type[Parameters]
    run: Callable[[JobInput, Progress], JobOutput]
    required_images: tuple[ImageField, ...] = ()
    optional_images: tuple[ImageField, ...] = ()
    prompt: Literal["required", "optional", "unused"] = "unused"
    engines: tuple[str, ...] = ()
    # Cross-field rules that need the decoded images (mask size, style or style_image).
    check: Check = no_checks
    # The image fields whose pixels ``check`` reads: decoded on submit. The others are only checked
    # there for format, size and completeness (``check`` may read their ``.size``, not their pixels).
    check_reads: tuple[ImageField, ...] = ()
    # Engines that run on another queue than ``queue``: object removal's diffusion engine runs
    # where the diffusion model is already loaded (the gpu queue), not on the cpu queue.
    engine_queues: Mapping[str, Literal["gpu", "cpu"]] = field(default_factory=dict)
    # ``python app.py download-models``: fetches this operation's weights ahead of time into
    # ATELIER_MODELS_DIR and returns one line per model saying what is where (None: nothing to fetch).
    download: Callable[[], list[str]] | None = None

    @property
    def image_fields(self) -> tuple[ImageField, ...]:
        return self.required_images + self.optional_images
