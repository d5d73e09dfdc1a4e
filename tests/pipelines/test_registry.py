"""The engine registry: each operation's engine mapping is the one list its choices, routing and
downloads come from."""

from __future__ import annotations

import subprocess
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from PIL import Image
from pydantic import Field, ValidationError

from pipelines import OPERATIONS
from pipelines.base import Engine, JobInput, JobOutput, Operation, Parameters, Progress, engine_choice, engine_map
from pipelines.downloads import Model, OnTransfer, Transfer
from pipelines.object_removal import TeleaEngine
from pipelines.validation import validate_parameters
from settings import Settings, get_settings
from tasks.celery_app import queue_for

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, kw_only=True)
class SketchModel(Model):
    """The stand-in engine's weights: "downloaded" by writing a file."""

    def location(self, settings: Settings) -> Path | None:
        path = settings.models_dir / "sketch.onnx"
        return path if path.is_file() else None

    def fetch(self, settings: Settings, on_transfer: OnTransfer) -> Path:
        path = settings.models_dir / "sketch.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 2_500_000)
        on_transfer(Transfer("sketch.onnx", 2_500_000, 2_500_000))
        return path


class SketchEngine(Engine):
    """A stand-in engine added to a mapping: one class and one line in the mapping."""

    name = "sketch"
    queue = "gpu"

    def models(self, settings: Settings) -> list[Model]:
        return [SketchModel(name="sketch", license="MIT", size=2_500_000, default=True)]

    def run(self, job: JobInput, progress: Progress) -> JobOutput:
        progress(1.0, "Sketched")
        return JobOutput(job.images["image"], {"engine": self.name})


class NotReadyEngine(Engine):
    """An engine whose weights are missing here."""

    name = "not-ready"

    def is_ready(self, settings: Settings) -> bool:
        return False

    def run(self, job: JobInput, progress: Progress) -> JobOutput:
        raise AssertionError("not ready: never picked by default")


ENGINES = engine_map(NotReadyEngine(), TeleaEngine(), SketchEngine())

if TYPE_CHECKING:
    DemoEngine = str
else:
    DemoEngine = engine_choice(ENGINES)


class DemoParameters(Parameters):
    engine: DemoEngine | None = Field(default=None)
    radius: int = 3
    dilate: int = 0


DEMO = Operation(name="demo", queue="cpu", title="Demo", parameters=DemoParameters, engines=ENGINES)


def engine_names(parameters: type[Parameters]) -> tuple[str, ...]:
    """The choices of a parameters model's ``engine`` field (``Literal[...]`` or ``Literal[...] | None``)."""
    annotation = parameters.model_fields["engine"].annotation
    literal = next(
        arg for arg in (*typing.get_args(annotation), annotation) if typing.get_origin(arg) is typing.Literal
    )
    return typing.get_args(literal)


def test_every_operation_has_engines_named_by_their_keys() -> None:
    for operation in OPERATIONS.values():
        assert operation.engines, operation.name
        assert all(engine.name == name for name, engine in operation.engines.items()), operation.name


def test_the_engine_choices_are_the_mapping() -> None:
    assert tuple(OPERATIONS["object_removal"].engines) == ("lama", "telea", "diffusion")
    assert tuple(OPERATIONS["style_transfer"].engines) == ("fast", "diffusion")
    for name in ("object_removal", "style_transfer"):
        operation = OPERATIONS[name]
        assert engine_names(operation.parameters) == tuple(operation.engines)
        schema = operation.parameters.model_json_schema()["properties"]["engine"]
        assert str(schema).count("'enum'") == 1 and all(engine in str(schema) for engine in operation.engines)


def test_an_unknown_engine_is_refused_naming_the_choices() -> None:
    _, errors = validate_parameters(OPERATIONS["object_removal"], {"engine": "magic"})
    assert errors == {"parameters.engine": ["Input should be 'lama', 'telea' or 'diffusion'"]}
    _, errors = validate_parameters(OPERATIONS["style_transfer"], {"engine": "magic"})
    assert errors == {"parameters.engine": ["Input should be 'fast' or 'diffusion'"]}


def test_routing_reads_each_engines_queue() -> None:
    settings = Settings()
    for name, operation in OPERATIONS.items():
        assert queue_for(name, settings) == operation.queue
        for engine_name, engine in operation.engines.items():
            assert queue_for(name, settings, {"engine": engine_name}) == (engine.queue or operation.queue)
    assert queue_for("object_removal", settings, {"engine": "diffusion"}) == "gpu"
    assert queue_for("object_removal", settings, {"engine": "telea"}) == "cpu"
    assert queue_for("object_removal", Settings(queues={"object_removal": "gpu"}), {"engine": "telea"}) == "gpu"


def test_a_new_engine_shows_up_in_choices_routing_and_runs() -> None:
    assert engine_names(DemoParameters) == ("not-ready", "telea", "sketch")
    assert DemoParameters.model_validate({"engine": "sketch"}).engine == "sketch"
    with pytest.raises(ValidationError, match="Input should be 'not-ready', 'telea' or 'sketch'"):
        DemoParameters.model_validate({"engine": "magic"})
    assert DEMO.queue_of("sketch") == "gpu" and DEMO.queue_of("telea") == "cpu" and DEMO.queue_of(None) == "cpu"
    image = Image.new("RGB", (8, 8))
    job = JobInput({"image": image}, DemoParameters(engine="sketch"), settings=get_settings())
    assert DEMO.run(job, lambda fraction, message, preview=None: None).metadata == {"engine": "sketch"}


def test_the_default_engine_is_the_first_that_can_run_here() -> None:
    settings = get_settings()
    assert DEMO.default_engine(settings) == "telea"  # "not-ready" comes first but cannot run
    assert DEMO.engine_for(DemoParameters(), settings).name == "telea"
    only = Operation(
        name="only", queue="cpu", title="Only", parameters=DemoParameters, engines=engine_map(NotReadyEngine())
    )
    assert only.default_engine(settings) == "not-ready"  # the only engine: its run says what is missing
    with pytest.raises(ValueError, match="needs at least one engine"):
        Operation(name="none", queue="cpu", title="None", parameters=DemoParameters, engines={})


def test_download_models_fetches_each_engines_models(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    import pipelines
    from app import download_models

    monkeypatch.setattr(pipelines, "OPERATIONS", {"demo": DEMO})
    (get_settings().models_dir / "sketch.onnx").unlink(missing_ok=True)
    assert download_models() == 0
    out = capsys.readouterr().out.splitlines()
    models = get_settings().models_dir
    assert out[2] == "The weight-free engines need no download: demo (telea)."
    assert out[3:] == [
        "sketch — 2.5 MB, MIT",
        f"  {models / 'sketch.onnx'} (2.5 MB)",
        "Summary: 1 downloaded (2.5 MB), 0 already there, 0 failed.",
    ]
    assert download_models(["sketch"]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        f"  already there: {models / 'sketch.onnx'}",
        "Summary: 0 downloaded (0 MB), 1 already there, 0 failed.",
    ]
    assert download_models(["sketch", "nope"]) == 1
    assert "Unknown model 'nope'; available: sketch" in capsys.readouterr().err


def test_the_registry_imports_no_heavy_library() -> None:
    heavy = ("torch", "diffusers", "onnxruntime", "rembg", "cv2", "insightface", "huggingface_hub")
    code = f"import pipelines, sys; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
