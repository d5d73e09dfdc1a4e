"""Models load once per worker process, through this cache; and the one place that picks a device."""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from pipelines.base import ModelUnavailable
from settings import Settings

T = TypeVar("T")

_models: dict[str, Any] = {}
_lock = threading.Lock()
load_counts: Counter[str] = Counter()
# Called with each key once its model is loaded: a worker records what its processes hold (tasks/models.py).
load_hooks: list[Callable[[str], None]] = []


def load_once(key: str, loader: Callable[[], T]) -> T:
    """Return the model cached under ``key``, calling ``loader`` only the first time in this process."""
    with _lock:
        if key not in _models:
            _models[key] = loader()
            load_counts[key] += 1
            for hook in load_hooks:
                hook(key)
        model: T = _models[key]
        return model


def cache_key(kind: str, *settings_used: object) -> str:
    """A ``load_once`` key: the model's kind and every setting that changes what gets loaded (its path,
    the device...), so two settings objects in one process never share a model loaded for the other."""
    return ":".join([kind, *(str(value) for value in settings_used)])


# -- devices ---------------------------------------------------------------------------------------
# ONNX engines (rembg, insightface, the fast style networks) ask onnxruntime, torch engines (LaMa,
# diffusers) ask torch: the two are separate builds, and one may see a GPU the other cannot use
# (a CUDA onnxruntime beside a CPU-only torch wheel, say), so each runtime is asked about itself.


def onnx_device(settings: Settings) -> str:
    """``settings.device`` for onnxruntime: ``auto`` becomes ``cuda`` when it (or an already imported
    torch) can see a GPU, else ``cpu``."""
    if settings.device != "auto":
        return settings.device
    try:
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return "cuda"
    except ImportError:
        pass
    # Only when torch is already imported (a diffusion worker): importing it here would cost the
    # web process and onnx-only workers a second and hundreds of MB for nothing.
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def onnx_providers(settings: Settings) -> list[str]:
    """onnxruntime's execution providers for ``settings.device``, best first."""
    if onnx_device(settings) == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def torch_device(settings: Settings) -> str:
    """``settings.device`` for torch: ``cuda`` when allowed and torch sees a GPU, else ``cpu``;
    an explicit ``cuda`` that torch cannot use is an error, not a silent fallback."""
    import torch

    if settings.device != "cpu" and torch.cuda.is_available():
        return "cuda"
    if settings.device == "cuda":
        raise ModelUnavailable(
            f"ATELIER_DEVICE=cuda but torch {torch.__version__} sees no CUDA GPU; set ATELIER_DEVICE=auto or cpu"
        )
    return "cpu"
