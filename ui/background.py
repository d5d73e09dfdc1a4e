"""Remove background: cut the subject out onto transparency or a colour."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from jobs import background_models
from ui.common import Update, job_controls, run, submit

EXAMPLES = [["assets/examples/chelsea.jpg"], ["assets/examples/rocket.jpg"]]


def parameters(
    model: str, alpha_matting: bool, bgcolor: str, only_mask: bool, post_process_mask: bool
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": model,
        "alpha_matting": bool(alpha_matting),
        "only_mask": bool(only_mask),
        "post_process_mask": bool(post_process_mask),
    }
    if bgcolor:
        params["bgcolor"] = bgcolor  # "#RRGGBB" or rgba(…): the job's validation reads it, or names it
    return params


async def background_removal(
    image: str | None,
    model: str = "u2net",
    alpha_matting: bool = False,
    bgcolor: str = "",
    only_mask: bool = False,
    post_process_mask: bool = False,
    progress: gr.Progress = gr.Progress(),  # noqa: B008
) -> AsyncIterator[Update]:
    """Remove the background; bgcolor "" keeps it transparent, "#rrggbb" fills it."""
    params = parameters(model, alpha_matting, bgcolor, only_mask, post_process_mask)
    async for update in run("background_removal", progress, images={"image": image}, parameters=params):
        yield update


def submit_background_removal(
    image: str | None,
    model: str = "u2net",
    alpha_matting: bool = False,
    bgcolor: str = "",
    only_mask: bool = False,
    post_process_mask: bool = False,
) -> str:
    """Queue a background removal and return its task id at once."""
    params = parameters(model, alpha_matting, bgcolor, only_mask, post_process_mask)
    return submit("background_removal", images={"image": image}, parameters=params)


def render() -> gr.Textbox:
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Photo", type="filepath", image_mode=None, sources=["upload", "clipboard"])
            model = gr.Dropdown(list(background_models()), value="u2net", label="Model", allow_custom_value=True)
            with gr.Row():
                matting = gr.Checkbox(label="Alpha matting (finer hair and edges)")
                only_mask = gr.Checkbox(label="Only the mask")
                post_process = gr.Checkbox(label="Smooth the mask")
            with gr.Row():
                fill = gr.Checkbox(label="Fill the background with a colour")
                color = gr.ColorPicker(value="#ffffff", label="Background colour", visible=False)
            bgcolor = gr.Textbox(value="", visible=False)  # "" = transparent
        with gr.Column(elem_classes="checkerboard"):
            controls = job_controls()
    gr.Examples(EXAMPLES, [image], label="Try")

    def chosen_color(use: bool, value: str) -> tuple[dict[str, Any], str]:
        return gr.update(visible=use), (value if use else "")

    fill.change(chosen_color, [fill, color], [color, bgcolor], api_visibility="private")
    color.change(lambda use, value: value if use else "", [fill, color], bgcolor, api_visibility="private")
    inputs = [image, model, matting, bgcolor, only_mask, post_process]
    controls.wire("background_removal", background_removal, submit_background_removal, inputs)
    return controls.task_id
