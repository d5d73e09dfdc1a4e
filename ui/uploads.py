"""How the page takes images: as the uploaded files, unopened by Gradio.

Gradio's image components open an upload with Pillow before the handler runs; a file they cannot
read then fails with Gradio's internal "Could not preprocess input component …" naming a server
path, and the object editor decodes and converts every pixel in the web process. Here an upload
reaches the tab as its path (or bytes), and the job system checks, converts and names its
problems, the same facts REST gives, which the tab then words in its own labels.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from pipelines.images import CONVERTED, ImageRejected, decode_base64, encode_png, open_image

# An upload as a tab receives it: the server path of the uploaded file, or bytes (a data: URL).
Upload = str | bytes


def upload_of(payload: Any) -> Upload | None:
    """The file behind an image value: a Gradio ``ImageData``/``FileData``, its dict form, a path,
    bytes; a PIL image (tests, examples) as PNG bytes."""
    if payload is None or isinstance(payload, bytes | str):
        return payload or None
    if isinstance(payload, Path):
        return str(payload)
    if isinstance(payload, Image.Image):
        buffer = io.BytesIO()
        payload.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()
    value = payload if isinstance(payload, dict) else {"path": getattr(payload, "path", None),
                                                        "url": getattr(payload, "url", None)}  # fmt: skip
    if value.get("path"):
        return str(value["path"])
    url = value.get("url") or ""
    if url.startswith("data:"):
        try:
            return decode_base64(url)
        except ImageRejected:
            return url.encode()  # for the job system to call it what it is: no image
    return None


def read(upload: Upload | None) -> bytes | None:
    if upload is None:
        return None
    return upload if isinstance(upload, bytes) else Path(upload).read_bytes()


def raw_image(component: gr.Image) -> gr.Image:
    """The image field, its value reaching the tab as the uploaded file (see the module's docstring).
    An override on the instance, as ``ui.common.unchecked`` does."""
    component.preprocess = upload_of  # type: ignore[method-assign,assignment]
    return component


def raw_editor(editor: gr.ImageEditor) -> gr.ImageEditor:
    """The image editor, its value reaching the tab as ``{"background", "layers", "composite"}`` of
    uploads: the photo as it was uploaded, the painted layers as the browser drew them."""

    def files(payload: Any) -> dict[str, Any] | None:
        if payload is None:
            return None
        source: Any = payload
        if getattr(payload, "id", None) is not None:  # the page sends its layers ahead, as blobs
            source = editor.blob_storage.pop(payload.id, None) or payload
        layers = [upload_of(layer) for layer in getattr(source, "layers", None) or []]
        return {
            "background": upload_of(getattr(source, "background", None)),
            "layers": [layer for layer in layers if layer is not None],
            "composite": upload_of(getattr(source, "composite", None)),
        }

    editor.preprocess = files  # type: ignore[method-assign,assignment]
    return editor


def painted(layers: list[Any], size: tuple[int, int]) -> np.ndarray:
    """Where the editor's layers are painted (opaque), over a photo of ``size``; layers of another
    size (none the page draws) are left out."""
    mask = np.zeros((size[1], size[0]), dtype=bool)
    for layer in layers:
        data = read(upload_of(layer))
        if not data:
            continue
        image = Image.open(io.BytesIO(data))
        if image.size == size:
            mask |= np.asarray(image.convert("RGBA"))[..., 3] > 0
    return mask


def converted(data: bytes, max_pixels: int) -> tuple[bytes | None, str]:
    """(the PNG a BMP, TIFF or GIF upload becomes, None for an image kept as it is; what was done);
    :class:`ImageRejected` for a file the job system would refuse, checked as it checks it."""
    image = open_image(data, max_pixels, decode=False)
    if CONVERTED not in image.info:
        return None, "kept as uploaded"
    what = "its first frame" if image.info[CONVERTED] == "GIF" else "it"
    return encode_png(image), f"{image.info[CONVERTED]}, {what} converted to PNG ({image.width}×{image.height})"
