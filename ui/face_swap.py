"""Face swap: the face of one photo onto the faces of another."""

from __future__ import annotations

import gradio as gr

from ui.batch import files_section
from ui.chain import Rendered
from ui.common import job_controls, unchecked, whole
from ui.endpoints import Submission, endpoints
from ui.models import mark
from ui.uploads import raw_image

EXAMPLES = [["assets/examples/grace_hopper.jpg", "assets/examples/astronaut.jpg", -1]]  # two different people


def submission(image: str | None, target_image: str | None, face_index: float) -> Submission:
    """Put the largest face of `image` onto `target_image`'s faces (all, or face_index from the left)."""
    params = {} if face_index is None or face_index == -1 else {"face_index": whole(face_index)}  # -1: every face
    return {"images": {"image": image, "target_image": target_image}, "parameters": params}


def batch_submission(image: str | None, target_image: str | None, face_index: float) -> Submission:
    """What a batch of target photos shares: the source face (told once if missing, not per photo)."""
    if not image:
        raise gr.Error("Upload the source face first: it goes onto every photo of the batch.", title="No source face")
    return submission(image, None, face_index)


def render() -> Rendered:
    api = endpoints("face_swap", submission, face_index=-1)
    with gr.Row():
        with gr.Column():
            with gr.Row():
                source = raw_image(
                    gr.Image(label="Source face", type="filepath", image_mode=None, sources=["upload", "clipboard"])
                )
                target = raw_image(
                    gr.Image(label="Target photo", type="filepath", image_mode=None, sources=["upload", "clipboard"])
                )
            face_index = unchecked(
                gr.Number(
                    value=api.defaults["face_index"],
                    precision=0,
                    minimum=-1,
                    label="Face to replace (-1 = all faces, 0 = leftmost)",
                )
            )
            mark(gr.Markdown(visible=False, elem_classes="models-note"), "face_swap", "note")  # what no worker has
        with gr.Column():
            controls = job_controls("face_swap")
    inputs = [source, target, face_index]
    batch = files_section(
        "face_swap",
        batch_submission,
        inputs,
        item_field="target_image",
        hint="Choose several target photos: the source face above goes onto each of them.",
    )
    gr.Examples(EXAMPLES, [source, target, face_index], label="Try")
    controls.wire(api, inputs)
    targets = {"face_swap.image": source, "face_swap.target_image": target}
    return Rendered(controls.task_id, batch, controls.result, controls.send, targets)
