"""Generate: an image from a prompt."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from ui.common import Update, job_controls, run, submit, unchecked, whole

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


def parameters(
    negative_prompt: str,
    width: float,
    height: float,
    steps: float,
    guidance_scale: float,
    seed: float,
    num_images: float,
) -> dict[str, Any]:
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
    return params


async def image_generation(
    prompt: str,
    negative_prompt: str = "",
    width: float = 512,
    height: float = 512,
    steps: float = 4,
    guidance_scale: float = 0.0,
    seed: float = -1,
    num_images: float = 1,
    progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's documented way to ask for progress
) -> AsyncIterator[Update]:
    """Generate an image from a prompt; streams (image, task id, status). seed -1 = random."""
    params = parameters(negative_prompt, width, height, steps, guidance_scale, seed, num_images)
    async for update in run("image_generation", progress, prompt=prompt, images={}, parameters=params):
        yield update


def submit_image_generation(
    prompt: str,
    negative_prompt: str = "",
    width: float = 512,
    height: float = 512,
    steps: float = 4,
    guidance_scale: float = 0.0,
    seed: float = -1,
    num_images: float = 1,
) -> str:
    """Queue an image generation and return its task id at once."""
    params = parameters(negative_prompt, width, height, steps, guidance_scale, seed, num_images)
    return submit("image_generation", prompt=prompt, images={}, parameters=params)


def render() -> gr.Textbox:
    with gr.Row():
        with gr.Column():
            prompt = gr.Textbox(label="Prompt", lines=3, max_length=5000, placeholder="What should the image show?")
            negative = gr.Textbox(value="", label="Negative prompt", placeholder="What to avoid (optional)")
            size = gr.Dropdown(list(SIZES), value="Square 512×512", label="Size")
            with gr.Row():
                width = unchecked(gr.Slider(64, 2048, value=512, step=8, label="Width"))
                height = unchecked(gr.Slider(64, 2048, value=512, step=8, label="Height"))
            with gr.Row():
                steps = unchecked(gr.Slider(1, 50, value=4, step=1, label="Steps"))
                guidance = unchecked(gr.Slider(0, 15, value=0, step=0.5, label="Guidance"))
            with gr.Row():
                seed = unchecked(gr.Number(value=-1, precision=0, label="Seed (-1 = random)", minimum=-1, scale=3))
                dice = gr.Button("Random seed", scale=1, min_width=60)
                count = unchecked(gr.Slider(1, 4, value=1, step=1, label="Images", scale=3))
        with gr.Column():
            controls = job_controls()
    gr.Examples(EXAMPLES, [prompt, negative], label="Try")
    inputs = [prompt, negative, width, height, steps, guidance, seed, count]

    size.change(lambda name: SIZES[name], size, [width, height], api_visibility="private")
    dice.click(lambda: random.randint(0, 2**32 - 1), None, seed, api_visibility="private")
    controls.wire("image_generation", image_generation, submit_image_generation, inputs)
    return controls.task_id
