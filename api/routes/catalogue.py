"""``/api/v1/styles/``: what scripts may choose from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.errors import error
from api.schemas import ErrorResponse, StylePresetInfo
from pipelines.style_transfer import STYLE_PRESETS

ASSETS = Path(__file__).resolve().parents[2] / "assets"
router = APIRouter(prefix="/api/v1/styles", tags=["styles"])


@router.get("/", response_model=list[StylePresetInfo])
def list_styles() -> Any:
    """The style presets for ``style_transfer``'s ``parameters.style``."""
    return [
        {
            "name": preset.name,
            "title": preset.title,
            "engine": preset.engine,
            "thumbnail_url": f"/api/v1/styles/{preset.name}/thumbnail",
        }
        for preset in STYLE_PRESETS.values()
    ]


@router.get(
    "/{name}/thumbnail",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorResponse}},
)
def style_thumbnail(name: str) -> Any:
    """A small preview of the preset applied to a sample photo."""
    if name not in STYLE_PRESETS:
        return error(404, "Style not found", message=f"Unknown style {name!r}; available: {', '.join(STYLE_PRESETS)}")
    return FileResponse(ASSETS / "styles" / f"{name}.jpg", media_type="image/jpeg")
