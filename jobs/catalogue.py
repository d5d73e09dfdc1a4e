"""What the page may offer, read from the registry and the settings (ui/ imports this, never pipelines/)."""

from __future__ import annotations

from typing import Any

from settings import QUEUES, Settings, get_settings
from tasks.celery_app import queue_for


def style_presets() -> list[tuple[str, str]]:
    """(name, title) of each style preset."""
    from pipelines.style_transfer import STYLE_PRESETS

    return [(preset.name, preset.title) for preset in STYLE_PRESETS.values()]


def background_models() -> tuple[str, ...]:
    from pipelines.background_removal import REMBG_MODELS

    return REMBG_MODELS


def engines(task_type: str) -> tuple[str, ...]:
    """The engine names ``task_type`` offers, in the registry's order."""
    from pipelines import OPERATIONS

    return tuple(OPERATIONS[task_type].engines)


def parameter_defaults(task_type: str, settings: Settings | None = None) -> dict[str, Any]:
    """Each parameter's default as a job gets it when it names none: the schema's, or the
    setting the schema names for it (``background_removal``'s model: ATELIER_BACKGROUND_MODEL)."""
    from pipelines import OPERATIONS
    from pipelines.base import DEFAULT_SETTING

    defaults: dict[str, Any] = {}
    for name, field in OPERATIONS[task_type].parameters.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        setting = extra.get(DEFAULT_SETTING)
        if isinstance(setting, str):
            defaults[name] = getattr(settings or get_settings(), setting)
        else:
            defaults[name] = field.get_default(call_default_factory=True)
    return defaults


def operations_by_queue(settings: Settings | None = None) -> dict[str, list[str]]:
    """Queue → the titles of the operations routed to it (after ATELIER_QUEUES overrides)."""
    from pipelines import OPERATIONS

    by_queue: dict[str, list[str]] = {queue: [] for queue in QUEUES}
    for name, operation in OPERATIONS.items():
        by_queue[queue_for(name, settings or get_settings())].append(operation.title.lower())
    return by_queue
