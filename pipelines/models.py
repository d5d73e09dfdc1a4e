"""Models load once per worker process, through this cache."""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_models: dict[str, Any] = {}
_lock = threading.Lock()
load_counts: Counter[str] = Counter()


def load_once(key: str, loader: Callable[[], T]) -> T:
    """Return the model cached under ``key``, calling ``loader`` only the first time in this process."""
    with _lock:
        if key not in _models:
            _models[key] = loader()
            load_counts[key] += 1
        model: T = _models[key]
        return model


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when onnxruntime or torch can see a GPU, else ``cpu``."""
    if device != "auto":
        return device
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
