"""Generate: an image from a prompt."""

from __future__ import annotations

import random
from typing import Any

import gradio as gr

from ui.batch import prompts_section
from ui.chain import Rendered
from ui.common import job_controls, unchecked, whole
from ui.endpoints import Submission, endpoints
from ui.models import mark

SIZES = {
    "Square 512×512": (512, 512),
    "Portrait 512×768": (512, 768),
    "Landscape 768×512": (768, 512),
    "Square 1024×1024": (1024, 1024),
    "Wide 1024×576": (1024, 576),
}
EXAMPLES = [
    ["a lighthouse on a cliff at dusk, oil painting", ""],
    ["a ceramic coffee cup on a wooden table, studio photo", "blurry, text"],
]


def submission(
    prompt: str,
    negative_prompt: str,
    width: float,
    height: float,
    steps: float,
    guidance_scale: float,
    seed: float,
    num_images: float,
) -> Submission:
    """Generate an image from a prompt; streams (image, task id, status). seed -1 = random."""
    params: dict[str, Any] = {
        "width": whole(width),
        "height": whole(height),
        "steps": whole(steps),
        "guidance_scale": guidance_scale,
        "num_images": whole(num_images),
    }
    if negative_prompt and negative_prompt.strip():
        params["negative_prompt"] = negative_prompt
    if seed is not None and seed != -1:  # -1: a random seed, as the field says
        params["seed"] = whole(seed)
    return {"prompt": prompt, "images": {}, "parameters": params}


def render() -> Rendered:
    api = endpoints("image_generation", submission, negative_prompt="", seed=-1)
    defaults = api.defaults
    size_names = {size: name for name, size in SIZES.items()}
    with gr.Row():
        with gr.Column():
            prompt = gr.Textbox(label="Prompt", lines=3, max_length=5000, placeholder="What should the image show?")
            negative = gr.Textbox(
                value=defaults["negative_prompt"], label="Negative prompt", placeholder="What to avoid (optional)"
            )
            size = gr.Dropdown(list(SIZES), value=size_names.get((defaults["width"], defaults["height"])), label="Size")
            with gr.Row():
                width = unchecked(gr.Slider(64, 2048, value=defaults["width"], step=8, label="Width"))
                height = unchecked(gr.Slider(64, 2048, value=defaults["height"], step=8, label="Height"))
            with gr.Row():
                steps = unchecked(gr.Slider(1, 50, value=defaults["steps"], step=1, label="Steps"))
                guidance = unchecked(gr.Slider(0, 15, value=defaults["guidance_scale"], step=0.5, label="Guidance"))
            with gr.Row():
                seed = unchecked(
                    gr.Number(value=defaults["seed"], precision=0, label="Seed (-1 = random)", minimum=-1, scale=3)
                )
                dice = gr.Button("Random seed", scale=1, min_width=60)
                count = unchecked(gr.Slider(1, 4, value=defaults["num_images"], step=1, label="Images", scale=3))
            mark(gr.Markdown(visible=False, elem_classes="models-note"), "image_generation", "note")
        with gr.Column():
            controls = job_controls("image_generation")
    inputs = [prompt, negative, width, height, steps, guidance, seed, count]
    batch = prompts_section(submission, inputs)
    gr.Examples(EXAMPLES, [prompt, negative], label="Try")

    size.change(lambda name: SIZES[name], size, [width, height], api_visibility="private")
    dice.click(lambda: random.randint(0, 2**32 - 1), None, seed, api_visibility="private")
    controls.wire(api, inputs)
    # PNG Info's Send to Generate fills these.
    fills = {"prompt": prompt, "negative_prompt": negative, "width": width, "height": height, "steps": steps}
    fills |= {"guidance_scale": guidance, "seed": seed}
    targets = {f"image_generation.{name}": widget for name, widget in fills.items()}
    return Rendered(controls.task_id, batch, controls.result, controls.send, targets)
