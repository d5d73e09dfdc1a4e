"""Remove object: paint over it (or upload a mask) and let the engine fill it in."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from jobs import engines
from ui.batch import files_section
from ui.chain import Rendered
from ui.common import job_controls, unchecked, whole
from ui.endpoints import Submission, endpoints
from ui.models import mark

EXAMPLES = [
    [{"background": "assets/examples/coffee.jpg", "layers": [], "composite": None}, "assets/examples/coffee_mask.png"]
]
NO_MASK = "Paint over the object to remove with the brush, or upload a mask (white = remove)."
BATCH_NO_MASK = (
    "A batch needs one mask for every photo: upload it under “…or upload a mask” (white = remove), "
    "or paint it over one of the photos in the editor."
)
EDITOR_VALUE = (
    'From the API, pass the photo as an image-editor value: {"background": handle_file(path), "layers": [], '
    '"composite": None}, and the mask as the second argument.'
)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _open(value: Any) -> Image.Image | None:
    if value is None or isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):  # FileData from the API
        value = value.get("path")
    return Image.open(value) if value else None


def images_from(editor: dict[str, Any] | None, mask: str | None) -> dict[str, bytes]:
    """The photo, and a black-and-white mask: what is painted on the editor's layers plus any uploaded mask."""
    if editor is not None and not isinstance(editor, dict):
        raise gr.Error(EDITOR_VALUE, title="Invalid input")
    background = _open((editor or {}).get("background"))
    if background is None:
        raise gr.Error("Upload a photo first. " + EDITOR_VALUE, title="Invalid input")
    if background.mode != "RGB":
        background = background.convert("RGB")
    painted = np.zeros((background.height, background.width), dtype=bool)
    for layer in (editor or {}).get("layers") or []:
        layer = _open(layer)
        if layer is not None and layer.size == background.size:
            painted |= np.asarray(layer.convert("RGBA"))[..., 3] > 0
    if mask and not painted.any():
        return {"image": _png(background), "mask": Path(mask).read_bytes()}  # validated by the job system
    if mask:
        uploaded = Image.open(mask)
        if uploaded.size != background.size:
            raise gr.Error(
                f"The mask is {uploaded.width}×{uploaded.height} but the photo is "
                f"{background.width}×{background.height}; they must match.",
                title="Invalid input",
            )
        painted |= np.asarray(uploaded.convert("L")) > 127
    if not painted.any():
        raise gr.Error(NO_MASK, title="Nothing to remove")
    return {"image": _png(background), "mask": _png(Image.fromarray(painted.astype(np.uint8) * 255))}


def _parameters(engine: str, dilate: float) -> dict[str, Any]:
    params: dict[str, Any] = {"dilate": whole(dilate)}
    if engine and engine != "auto":
        params["engine"] = engine
    return params


def submission(image: dict[str, Any] | None, mask: str | None, engine: str, dilate: float) -> Submission:
    """Remove what is painted on the image editor's layers (and white in `mask`)."""
    return {"images": images_from(image, mask), "parameters": _parameters(engine, dilate)}


def batch_submission(image: dict[str, Any] | None, mask: str | None, engine: str, dilate: float) -> Submission:
    """One mask for every photo of a batch: the uploaded mask, or what is painted over the photo in the
    editor (with the uploaded mask added, as for one job). The photos must be the mask's size."""
    if isinstance(image, dict) and _open(image.get("background")) is not None:
        shared = images_from(image, mask)["mask"]
    elif mask:
        shared = Path(mask).read_bytes()  # validated by the job system, against each photo
    else:
        raise gr.Error(BATCH_NO_MASK, title="No mask")
    return {"images": {"mask": shared}, "parameters": _parameters(engine, dilate)}


def render() -> Rendered:
    api = endpoints("object_removal", submission, mask=None, engine="auto")
    with gr.Row():
        with gr.Column():
            editor = gr.ImageEditor(
                label="Photo — paint over what to remove",
                type="pil",
                image_mode="RGBA",  # layers keep their alpha: painted = opaque
                sources=["upload", "clipboard"],
                brush=gr.Brush(colors=["rgba(255, 255, 255, 0.85)"], color_mode="fixed", default_size=24),
                layers=False,
                transforms=(),
                format="png",
                elem_id="object-editor",
            )
            with gr.Accordion("…or upload a mask", open=False):
                mask = gr.Image(
                    label="Mask (white = remove, same size as the photo)",
                    type="filepath",
                    image_mode=None,  # the uploaded file as is: no re-encoding into a shared cache file
                    elem_id="object-mask",
                )
            with gr.Row():
                choices = ["auto", *engines("object_removal")]
                engine = gr.Dropdown(choices, value=api.defaults["engine"], label="Engine")
                mark(engine, "object_removal", "engine", choices)  # "lama — downloads on first use (206 MB)"
                dilate = unchecked(gr.Slider(0, 64, value=api.defaults["dilate"], step=1, label="Grow the mask (px)"))
        with gr.Column():
            controls = job_controls("object_removal")
    inputs = [editor, mask, engine, dilate]
    batch = files_section(
        "object_removal",
        batch_submission,
        inputs,
        hint="Choose several photos of the same size: the one mask above (uploaded, or painted over a photo "
        "in the editor) is removed from each of them.",
    )
    gr.Examples(EXAMPLES, [editor, mask], label="Try")
    controls.wire(api, inputs)
    return Rendered(controls.task_id, batch, controls.result, controls.send, {"object_removal": editor})
