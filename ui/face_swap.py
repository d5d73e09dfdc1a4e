"""Face swap: the face of one photo onto the faces of another."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from ui.common import Update, job_controls, run, submit, unchecked, whole

EXAMPLES = [["assets/examples/astronaut.jpg", "assets/examples/astronaut.jpg", -1]]


def parameters(face_index: float | None) -> dict[str, Any]:
    return {} if face_index is None or face_index == -1 else {"face_index": whole(face_index)}  # -1: every face


async def face_swap(
    image: str | None,
    target_image: str | None,
    face_index: float = -1,
    progress: gr.Progress = gr.Progress(),  # noqa: B008
) -> AsyncIterator[Update]:
    """Put the largest face of `image` onto `target_image`'s faces (all, or face_index from the left)."""
    images = {"image": image, "target_image": target_image}
    async for update in run("face_swap", progress, images=images, parameters=parameters(face_index)):
        yield update


def submit_face_swap(image: str | None, target_image: str | None, face_index: float = -1) -> str:
    """Queue a face swap and return its task id at once."""
    images = {"image": image, "target_image": target_image}
    return submit("face_swap", images=images, parameters=parameters(face_index))


def render() -> gr.Textbox:
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
                gr.Number(value=-1, precision=0, minimum=-1, label="Face to replace (-1 = all faces, 0 = leftmost)")
            )
        with gr.Column():
            controls = job_controls()
    gr.Examples(EXAMPLES, [source, target, face_index], label="Try")
    inputs = [source, target, face_index]
    controls.wire("face_swap", face_swap, submit_face_swap, inputs)
    return controls.task_id
