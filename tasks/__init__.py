"""Celery side of Atelier: ``celery -A tasks worker -Q gpu`` (or ``-Q cpu``) starts a worker.

Importing this package starts and reads nothing: ``tasks.app``, the Celery app for the process's
settings, is built on first use (Celery's ``-A tasks`` asks for it by that name).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery

from tasks.celery_app import TASK_NAME, make_celery, queue_for

__all__ = ["TASK_NAME", "app", "get_app", "make_celery", "queue_for"]


@lru_cache(maxsize=1)
def get_app() -> Celery:
    """The process-wide Celery app, for ``settings.get_settings()``."""
    from settings import get_settings

    return make_celery(get_settings())


def __getattr__(name: str) -> Any:
    if name == "app":
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
