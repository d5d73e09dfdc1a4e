"""The small interface every operation and engine shares. Imports nothing heavy: the web process reads it."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from PIL import Image
from pydantic import BaseModel, ConfigDict

from settings import Settings

if TYPE_CHECKING:
    from pipelines.downloads import Model

ImageField = Literal["image", "target_image", "mask", "style_image"]
IMAGE_FIELDS: tuple[ImageField, ...] = ("image", "target_image", "mask", "style_image")
Queue = Literal["gpu", "cpu"]


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
    """Base of every operation's ``parameters`` schema: strict types, unknown names refused.

    A parameter whose default is a setting (None in the schema, the engine reads the setting) names
    it with ``Field(json_schema_extra={DEFAULT_SETTING: "<settings field>"})``, so that the page
    offers the same default a job gets."""

    model_config = ConfigDict(extra="forbid", strict=True)


DEFAULT_SETTING = "default_setting"


@dataclass(frozen=True)
class JobRequest:
    """What was submitted: decoded images by field, validated parameters and the prompt (what ``check`` reads)."""

    images: Mapping[str, Image.Image]
    parameters: Any
    prompt: str | None = None


@dataclass(frozen=True)
class JobInput(JobRequest):
    """What an engine runs on: the request, and the settings of the process that runs it."""

    settings: Settings = field(kw_only=True)


@dataclass
class JobOutput:
    """An operation's result: one image plus JSON-able metadata (engine, timings, ...)."""

    image: Image.Image
    metadata: dict[str, Any] = field(default_factory=dict)
    prompt_used: str | None = None


class Stopwatch:
    """A job's ``timings``: ``lap(name)`` records the seconds since the previous lap (or the start)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._mark = time.perf_counter()

    def lap(self, name: str) -> dict[str, float]:
        """Record lap ``name``; returns every lap so far, for the metadata's ``timings``."""
        now = time.perf_counter()
        self.laps[name] = round(now - self._mark, 4)
        self._mark = now
        return dict(self.laps)


class Engine(ABC):
    """One way of doing an operation's work (rembg's sessions, IOPaint's model classes).

    An operation holds its engines in a mapping; the ``engine`` choices a user sees, the routing and
    the models (the workers' reports, downloads on first use, ``python app.py download-models``) are
    derived from it. Heavy libraries are imported inside the methods, so the registry stays light to import.
    """

    name: ClassVar[str]
    # None: the operation's queue. An engine that runs best where another queue's model is already
    # loaded names that queue (object removal's diffusion engine: gpu).
    queue: ClassVar[Queue | None] = None
    # True for engines with nothing to fetch at all (OpenCV, weights shipped in a pip package).
    weight_free: ClassVar[bool] = False
    # The package its work imports: the workers report whether it is installed (importlib.util.find_spec).
    library: ClassVar[str | None] = None

    def is_ready(self, settings: Settings) -> bool:
        """Whether this engine can run here as configured (its weights are present). Cheap: loads nothing."""
        return True

    def models(self, settings: Settings) -> list[Model]:
        """Every model this engine can use under ``settings``, its default ones marked ``default``."""
        return []

    def models_for(self, job: JobInput) -> list[Model]:
        """The models ``job`` needs: what a worker fetches first when they are missing (ATELIER_AUTO_DOWNLOAD)."""
        return [model for model in self.models(job.settings) if model.default]

    @abstractmethod
    def run(self, job: JobInput, progress: Progress) -> JobOutput:
        """Do the work, reporting through ``progress``; raise :class:`PipelineError` for the user."""


def engine_map(*engines: Engine) -> dict[str, Engine]:
    """An operation's engines by name, in the order given (the first is preferred when ready)."""
    return {engine.name: engine for engine in engines}


def engine_choice(engines: Mapping[str, Engine]) -> Any:
    """The ``Literal`` of ``engines``' names, for a parameters model's ``engine`` field."""
    return Literal[tuple(engines)]


Check = Callable[[JobRequest], dict[str, list[str]]]


def no_checks(job: JobRequest) -> dict[str, list[str]]:
    return {}


@dataclass(frozen=True)
class Operation:
    """One entry of the registry: everything the API, the queue and the worker need to know."""

    name: str
    queue: Queue
    title: str
    parameters: type[Parameters]
    # At least one; the parameters' ``engine`` names one of them (see ``engine_choice``).
    engines: Mapping[str, Engine]
    required_images: tuple[ImageField, ...] = ()
    optional_images: tuple[ImageField, ...] = ()
    prompt: Literal["required", "optional", "unused"] = "unused"
    # Cross-field rules that need the decoded images (mask size, style or style_image).
    check: Check = no_checks
    # The image fields whose pixels ``check`` reads: decoded on submit. The others are only checked
    # there for format, size and completeness (``check`` may read their ``.size``, not their pixels).
    check_reads: tuple[ImageField, ...] = ()

    def __post_init__(self) -> None:
        if not self.engines:
            raise ValueError(f"Operation {self.name!r} needs at least one engine")

    @property
    def image_fields(self) -> tuple[ImageField, ...]:
        return self.required_images + self.optional_images

    def default_engine(self, settings: Settings) -> str:
        """The first engine that can run here; the first of all when none can (its error then says why)."""
        if len(self.engines) > 1:  # one engine is the default either way: no need to look at its files per job
            for name, engine in self.engines.items():
                if engine.is_ready(settings):
                    return name
        return next(iter(self.engines))

    def engine_for(self, parameters: Any, settings: Settings) -> Engine:
        """The engine ``parameters`` names, else the default one."""
        name = getattr(parameters, "engine", None) or self.default_engine(settings)
        return self.engines[name]

    def queue_of(self, engine: str | None) -> Queue:
        """The queue a job for ``engine`` goes to: the engine's own, else the operation's."""
        chosen = self.engines.get(engine) if engine is not None else None
        return (chosen.queue if chosen is not None else None) or self.queue

    def run(self, job: JobInput, progress: Progress) -> JobOutput:
        """Run ``job`` on the engine its parameters name (else the default engine), downloading the
        models it needs first when they are missing here (ATELIER_AUTO_DOWNLOAD)."""
        from pipelines.downloads import run_with_downloads

        return run_with_downloads(self.engine_for(job.parameters, job.settings), job, progress)
