"""Remove background: cut the subject out onto transparency or a colour."""

from __future__ import annotations

from typing import Any

import gradio as gr

from jobs import background_models
from ui.batch import files_section
from ui.chain import Rendered
from ui.common import job_controls
from ui.endpoints import Submission, endpoints
from ui.models import mark
from ui.uploads import raw_image

EXAMPLES = [["assets/examples/chelsea.jpg"], ["assets/examples/rocket.jpg"]]


def submission(
    image: str | None, model: str, alpha_matting: bool, bgcolor: str, only_mask: bool, post_process_mask: bool
) -> Submission:
    """Remove the background; bgcolor "" keeps it transparent, "#rrggbb" fills it."""
    params: dict[str, Any] = {
        "model": model,
        "alpha_matting": bool(alpha_matting),
        "only_mask": bool(only_mask),
        "post_process_mask": bool(post_process_mask),
    }
    if bgcolor:
        params["bgcolor"] = bgcolor  # "#RRGGBB" or rgba(…): the job's validation reads it, or names it
    return {"images": {"image": image}, "parameters": params}


def render() -> Rendered:
    # The model's default is ATELIER_BACKGROUND_MODEL's, as for a REST job that names none.
    api = endpoints("background_removal", submission, bgcolor="")
    defaults = api.defaults
    with gr.Row():
        with gr.Column():
            image = raw_image(
                gr.Image(label="Photo", type="filepath", image_mode=None, sources=["upload", "clipboard"])
            )
            models = list(background_models())
            model = gr.Dropdown(models, value=defaults["model"], label="Model", allow_custom_value=True)
            mark(model, "background_removal", "model", models)  # "birefnet-general — downloads on first use"
            with gr.Row():
                matting = gr.Checkbox(defaults["alpha_matting"], label="Alpha matting (finer hair and edges)")
                only_mask = gr.Checkbox(defaults["only_mask"], label="Only the mask")
                post_process = gr.Checkbox(defaults["post_process_mask"], label="Smooth the mask")
            with gr.Row():
                fill = gr.Checkbox(label="Fill the background with a colour")
                color = gr.ColorPicker(value="#ffffff", label="Background colour", visible=False)
            bgcolor = gr.Textbox(value=defaults["bgcolor"], visible=False)  # "" = transparent
        with gr.Column(elem_classes="checkerboard"):
            controls = job_controls("background_removal")
    inputs = [image, model, matting, bgcolor, only_mask, post_process]
    with gr.Column(elem_classes="checkerboard"):
        batch = files_section("background_removal", submission, inputs, replaces=image)
    gr.Examples(EXAMPLES, [image], label="Try")

    def chosen_color(use: bool, value: str) -> tuple[dict[str, Any], str]:
        return gr.update(visible=use), (value if use else "")

    fill.change(chosen_color, [fill, color], [color, bgcolor], api_visibility="private")
    color.change(lambda use, value: value if use else "", [fill, color], bgcolor, api_visibility="private")
    controls.wire(api, inputs)
    return Rendered(controls.task_id, batch, controls.result, controls.send, {"background_removal": image})
