"""Remove object: paint over it (or upload a mask) and let the engine fill it in."""

from __future__ import annotations

import io
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from jobs import InvalidSubmission, engines
from pipelines.images import ImageRejected, encode_png, open_image
from settings import get_settings
from ui.batch import files_section
from ui.chain import Rendered
from ui.common import error, from_api, job_controls, unchecked, whole
from ui.endpoints import Submission, endpoints
from ui.models import mark
from ui.uploads import Upload, painted, raw_editor, raw_image, read, upload_of

# The spoon on the saucer, its mask shown beside the photo. (Not as a layer of the editor: Gradio's
# editor draws an example's layers out of place.)
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


def _missing_photo() -> gr.Error:
    """No photo: the page's words, and for a script how to pass one."""
    return error(("Upload a photo first. " + EDITOR_VALUE) if from_api() else "Upload a photo first.", title="No photo")


def _size(photo: bytes) -> tuple[int, int]:
    """The photo's size as displayed (EXIF orientation applied), read from its header; its problem,
    in the job system's words, when it is no image."""
    try:
        return open_image(photo, get_settings().max_pixels, decode=False).size
    except ImageRejected as exc:
        raise InvalidSubmission({"image": [f"image {exc}"]}) from None


def images_from(editor: dict[str, Any] | None, mask: Any) -> dict[str, Upload | None]:
    """The photo as uploaded, and the mask: what is painted on the editor's layers plus any uploaded
    mask (the uploaded mask alone is passed on as it is; the job system checks it)."""
    if editor is not None and not isinstance(editor, dict):
        raise _missing_photo()
    photo = upload_of((editor or {}).get("background"))  # its path, when it has one: the result is named after it
    if photo is None:
        raise _missing_photo()
    uploaded = read(upload_of(mask))
    layers = (editor or {}).get("layers") or []
    if not layers:  # nothing painted: no pixel needs decoding here
        if uploaded is None:
            raise error(NO_MASK, title="Nothing to remove")
        return {"image": photo, "mask": uploaded}
    size = _size(read(photo) or b"")
    strokes = painted(layers, size)
    if uploaded is not None and strokes.any():
        stencil = Image.open(io.BytesIO(uploaded))
        if stencil.size != size:
            raise error(
                f"The mask is {stencil.width}×{stencil.height} but the photo is {size[0]}×{size[1]}; they must match.",
                title="Invalid input",
            )
        strokes |= np.asarray(stencil.convert("L")) > 127
    elif uploaded is not None:
        return {"image": photo, "mask": uploaded}
    if not strokes.any():
        raise error(NO_MASK, title="Nothing to remove")
    return {"image": photo, "mask": encode_png(Image.fromarray(strokes.astype(np.uint8) * 255))}


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
    if isinstance(image, dict) and upload_of(image.get("background")) is not None:
        shared = images_from(image, mask)["mask"]
    elif mask:
        shared = read(upload_of(mask))  # validated by the job system, against each photo
    else:
        raise gr.Error(BATCH_NO_MASK, title="No mask")
    return {"images": {"mask": shared}, "parameters": _parameters(engine, dilate)}


def render() -> Rendered:
    api = endpoints("object_removal", submission, mask=None, engine="auto")
    with gr.Row():
        with gr.Column():
            editor = raw_editor(
                gr.ImageEditor(
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
            )
            with gr.Accordion("…or upload a mask", open=True):
                mask = raw_image(
                    gr.Image(
                        label="Mask (white = remove, same size as the photo)",
                        type="filepath",
                        image_mode=None,  # the uploaded file as is: no re-encoding into a shared cache file
                        elem_id="object-mask",
                        height=220,
                    )
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
    gr.Examples(EXAMPLES, [editor, mask], label="Try: remove the spoon", elem_id="object-examples")
    controls.wire(api, inputs)
    return Rendered(controls.task_id, batch, controls.result, controls.send, {"object_removal": editor})
