"""Every engine's models, as the registry declares them: a worker's report of what it has, and the
names ``python app.py download-models`` and the Models tab take. Cheap: looks at files, imports nothing heavy."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.base import PipelineError
from pipelines.downloads import Model
from settings import Settings

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU the driver sees


@dataclass(frozen=True)
class Entry:
    """One model of one engine of one operation: a row of the Models tab."""

    operation: str
    engine: str
    library: str | None
    model: Model


def entries(settings: Settings, include: Callable[[str, str], bool] | None = None) -> list[Entry]:
    """Each (operation, engine, model) in the registry's order; ``include(operation, engine)`` filters."""
    from pipelines import OPERATIONS

    return [
        Entry(operation.name, name, engine.library, model)
        for operation in OPERATIONS.values()
        for name, engine in operation.engines.items()
        if include is None or include(operation.name, name)
        for model in engine.models(settings)
    ]


def describe(entry: Entry, settings: Settings) -> dict[str, Any]:
    """What the declaration says: the same on every machine with the same settings."""
    return {
        "operation": entry.operation,
        "engine": entry.engine,
        "model": entry.model.name,
        "license": entry.model.license,
        "size_bytes": entry.model.size,
        "download": entry.model.download_kind(settings),
        "default": entry.model.default,
    }


def installed(library: str | None) -> bool:
    return library is None or importlib.util.find_spec(library) is not None


def worker_report(settings: Settings, include: Callable[[str, str], bool], loaded: set[str]) -> dict[str, Any]:
    """What this machine has of each model of the engines ``include`` keeps: present (where, how big),
    library importable, loaded in memory (``loaded``: the ``load_once`` keys its processes hold)."""
    libraries: dict[str | None, bool] = {}
    models = []
    for entry in entries(settings, include):
        if entry.library not in libraries:
            libraries[entry.library] = installed(entry.library)
        path = entry.model.location(settings)
        models.append(
            {
                **describe(entry, settings),
                "present": path is not None,
                "path": str(path) if path is not None else None,
                "size_on_disk": entry.model.size_on_disk(settings) if path is not None else None,
                "library": entry.library,
                "library_installed": libraries[entry.library],
                "loaded": entry.model.loaded_key(settings) in loaded,
            }
        )
    return {"device": device(settings), "auto_download": settings.auto_download, "models": models}


def device(settings: Settings) -> str:
    """The device jobs run on here, without importing torch or onnxruntime: ATELIER_DEVICE, or for
    ``auto`` whether the NVIDIA driver sees a GPU."""
    if settings.device != "auto":
        return settings.device
    return "cuda" if NVIDIA_GPUS.is_dir() and any(NVIDIA_GPUS.iterdir()) else "cpu"


def unique(models: Iterable[Model]) -> list[Model]:
    """Each model once (the diffusion engines share the generation model), in order."""
    seen: dict[str, Model] = {}
    for model in models:
        seen.setdefault(model.name, model)
    return list(seen.values())


def find_models(names: list[str], settings: Settings, include: Callable[[str, str], bool] | None = None) -> list[Model]:
    """The models named (the defaults, to fetch, with no names); :class:`PipelineError` naming the
    unknown ones and the known ones."""
    known = unique(entry.model for entry in entries(settings, include) if entry.model.download_kind(settings) != "none")
    if not names:
        return [model for model in known if model.default]
    by_name = {model.name: model for model in known}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise PipelineError(f"Unknown model {', '.join(map(repr, unknown))}; available: {', '.join(by_name)}")
    return [by_name[name] for name in dict.fromkeys(names)]
