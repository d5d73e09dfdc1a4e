"""Face swap: the face of one photo onto the faces of another."""

from __future__ import annotations

import gradio as gr

from ui.common import job_controls, unchecked, whole
from ui.endpoints import Submission, endpoints

EXAMPLES = [["assets/examples/astronaut.jpg", "assets/examples/astronaut.jpg", -1]]


def submission(image: str | None, target_image: str | None, face_index: float) -> Submission:
    """Put the largest face of `image` onto `target_image`'s faces (all, or face_index from the left)."""
    params = {} if face_index is None or face_index == -1 else {"face_index": whole(face_index)}  # -1: every face
    return {"images": {"image": image, "target_image": target_image}, "parameters": params}


def render() -> gr.Textbox:
    api = endpoints("face_swap", submission, face_index=-1)
    with gr.Row():
        with gr.Column():
            with gr.Row():
                source = gr.Image(
                    label="Source face", type="filepath", image_mode=None, sources=["upload", "clipboard"]
                )
                target = gr.Image(
                    label="Target photo", type="filepath", image_mode=None, sources=["upload", "clipboard"]
                )
            face_index = unchecked(
                gr.Number(
                    value=api.defaults["face_index"],
                    precision=0,
                    minimum=-1,
                    label="Face to replace (-1 = all faces, 0 = leftmost)",
                )
            )
        with gr.Column():
            controls = job_controls()
    gr.Examples(EXAMPLES, [source, target, face_index], label="Try")
    inputs = [source, target, face_index]
    controls.wire(api, inputs)
    return controls.task_id
