"""``/api/v1/png-info/``: how a PNG was made (Atelier's or A1111's), as JSON."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from api.body import parse_submission
from api.deps import AppSettings
from api.errors import invalid
from api.schemas import PNG_INFO_FORM, ErrorResponse, PngInfoRequest, PngInfoResponse
from pipelines.images import ImageRejected, decode_base64
from pipelines.png_info import read_png_info

router = APIRouter(prefix="/api/v1/png-info", tags=["png-info"])


@router.post(
    "/",
    response_model=PngInfoResponse,
    response_model_exclude_none=True,
    responses={400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 415: {"model": ErrorResponse}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": PngInfoRequest.model_json_schema()},
                "multipart/form-data": {"schema": PNG_INFO_FORM},
            },
        }
    },
)
async def png_info(request: Request, settings: AppSettings) -> Any:
    """How a PNG was made: Atelier's own chunks (``source: atelier``), A1111's ``parameters`` text
    (``a1111``: prompt, negative prompt, steps, CFG scale as guidance_scale, seed, size), or ``none``."""
    fields, files = await parse_submission(request, settings.max_upload_bytes)
    unknown = sorted((set(fields) | set(files)) - {"image"})
    if unknown:
        return invalid({name[:80]: ["Unknown field; send only image"] for name in unknown[:20]})
    value = files.get("image", fields.get("image"))
    if not value:
        return invalid({"image": ["image is required: a PNG as base64 or a multipart file"]})
    try:
        data = decode_base64(value) if isinstance(value, str) else value
        if not isinstance(data, bytes):
            raise ImageRejected("must be a base64 string or an uploaded file")
        return await run_in_threadpool(read_png_info, data)
    except ImageRejected as exc:
        return invalid({"image": [f"image {exc}"]})
