"""Decoding uploads safely and encoding results."""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from typing import Any

from PIL import Image, ImageOps, PngImagePlugin

ALLOWED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}
_URLSAFE = str.maketrans("-_", "+/")
_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=-]+)*;base64,", re.IGNORECASE)


class ImageRejected(ValueError):
    """The bytes are not an acceptable image; the message says why."""


def decode_base64(text: str) -> bytes:
    """Base64 (optionally a ``data:`` URL) to bytes; raises :class:`ImageRejected`.

    Accepts what common tools write: line-wrapped (``base64 photo.jpg``), unpadded, URL-safe.
    """
    text = "".join(_DATA_URL.sub("", text.strip(), count=1).split())
    if "-" in text or "_" in text:
        text = text.translate(_URLSAFE)
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRejected("is not valid base64") from None


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open and fully decode PNG/JPEG/WebP bytes, refusing oversized and truncated images.

    The pixel count is checked from the header before any pixel is decoded, so a
    decompression bomb costs nothing.
    """
    if not data:
        raise ImageRejected("is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ImageRejected(f"has more than the limit of {max_pixels:,} pixels") from None
    except Exception:
        raise ImageRejected("could not be decoded as an image (use PNG, JPEG or WebP)") from None
    if image.format not in ALLOWED_FORMATS:
        raise ImageRejected(f"is {image.format}; use PNG, JPEG or WebP")
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageRejected(f"is {width}×{height} pixels; it must be at least 1×1")
    if width * height > max_pixels:
        raise ImageRejected(f"is {width}×{height} pixels, over the limit of {max_pixels:,} pixels")
    try:
        image.load()
    except Exception:
        raise ImageRejected("is truncated or corrupt") from None
    return ImageOps.exif_transpose(image)


def encode_png(image: Image.Image, text: dict[str, Any] | None = None, compress_level: int = 1) -> bytes:
    """PNG bytes with the given provenance as ``tEXt`` chunks (values JSON-encoded if not str)."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value if isinstance(value, str) else json.dumps(value, sort_keys=True))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=compress_level)
    return buffer.getvalue()
