"""Celery side of Atelier: ``celery -A tasks worker -Q gpu`` (or ``-Q cpu``) starts a worker."""

from __future__ import annotations

from settings import get_settings
from tasks.celery_app import TASK_NAME, make_celery, queue_for

app = make_celery(get_settings())

__all__ = ["TASK_NAME", "app", "make_celery", "queue_for"]
