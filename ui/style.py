"""Style transfer: repaint a photo in a preset style or in the style of any picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from jobs import engines, style_presets
from ui.batch import files_section
from ui.chain import Rendered
from ui.common import job_controls, unchecked
from ui.endpoints import Submission, endpoints
from ui.models import mark
from ui.uploads import raw_image

THUMBNAILS = Path(__file__).resolve().parent.parent / "assets" / "styles"
EXAMPLES = [["assets/examples/coffee.jpg", "starry-night"], ["assets/examples/astronaut.jpg", "mosaic"]]


def submission(
    image: str | None,
    style: str | None,
    style_image: str | None,
    strength: float,
    engine: str,
    preserve_color: bool,
) -> Submission:
    """Apply a preset `style` (see GET /api/v1/styles/) or the style of `style_image` (then style = "")."""
    params: dict[str, Any] = {"strength": strength, "engine": engine, "preserve_color": bool(preserve_color)}
    if style:
        params["style"] = style
    return {"images": {"image": image, "style_image": style_image}, "parameters": params}


def working_sizes() -> str:
    """What the engines do to a large photo, said before it is sent: the tab's note."""
    from pipelines.diffusion import MAX_WORKING_SIDE
    from pipelines.style_transfer import StyleTransferParameters

    fast = StyleTransferParameters.model_fields["max_size"].default
    return (
        f"Large photos: the fast engine styles at most {fast} px on the longest side and the diffusion engine "
        f"{MAX_WORKING_SIDE} px; the result is scaled back to the photo's size (the status says so)."
    )


def render() -> Rendered:
    presets = style_presets()
    api = endpoints("style_transfer", submission, style="mosaic", style_image=None)
    with gr.Row():
        with gr.Column():
            image = raw_image(
                gr.Image(label="Photo", type="filepath", image_mode=None, sources=["upload", "clipboard"])
            )
            gallery = gr.Gallery(
                [(str(THUMBNAILS / f"{name}.jpg"), title) for name, title in presets],
                label="Styles",
                show_label=False,
                buttons=[],
                columns=4,
                height=330,
                object_fit="cover",
                allow_preview=False,
                elem_id="style-gallery",
            )
            # Custom values pass to the job system, so a script's unknown name gets the REST API's message.
            style = gr.Dropdown(
                [("(none — use my style image)", ""), *[(t, n) for n, t in presets]],
                value=api.defaults["style"],
                label="Style",
                allow_custom_value=True,
            )
            with gr.Accordion("…or use your own style image", open=False):
                style_image = raw_image(
                    gr.Image(label="Style image", type="filepath", image_mode=None, sources=["upload", "clipboard"])
                )
            with gr.Row():
                strength = unchecked(gr.Slider(0, 1, value=api.defaults["strength"], step=0.05, label="Strength"))
                engine = gr.Radio(list(engines("style_transfer")), value=api.defaults["engine"], label="Engine")
                mark(engine, "style_transfer", "engine", engines("style_transfer"))
            preserve = gr.Checkbox(api.defaults["preserve_color"], label="Keep the photo's colours")
            gr.Markdown(working_sizes(), elem_id="style-limits", elem_classes="limits-note")
        with gr.Column():
            controls = job_controls("style_transfer")
    inputs = [image, style, style_image, strength, engine, preserve]
    batch = files_section("style_transfer", submission, inputs, replaces=image)
    gr.Examples(EXAMPLES, [image, style], label="Try")

    def picked(event: gr.SelectData) -> tuple[str, None]:
        return presets[event.index][0], None

    gallery.select(picked, None, [style, style_image], api_visibility="private")
    style_image.upload(lambda: "", None, style, api_visibility="private")
    controls.wire(api, inputs)
    return Rendered(controls.task_id, batch, controls.result, controls.send, {"style_transfer": image})
