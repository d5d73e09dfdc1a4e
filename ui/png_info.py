"""PNG Info: how a PNG was made (Atelier's own chunks, or A1111's ``parameters`` text), and a button
that fills the Generate tab from it. Read in the web process: no job (as ``POST /api/v1/png-info/``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from pipelines.images import ImageRejected
from pipelines.png_info import read_png_info
from ui.common import error

SOURCES = {"atelier": "Atelier", "a1111": "AUTOMATIC1111 (its `parameters` text)", "none": "nothing"}
# Generate's inputs that a PNG's information fills, in ``fill``'s order.
GENERATE_FIELDS = ["prompt", "negative_prompt", "width", "height", "steps", "guidance_scale", "seed"]
LABELS = {
    "steps": "Steps",
    "guidance_scale": "Guidance",
    "seed": "Seed",
    "sampler": "Sampler",
    "model": "Model",
    "style": "Style",
    "strength": "Strength",
    "engine": "Engine",
}


def summary_of(info: dict[str, Any]) -> str:
    """The information in words (Markdown): who made it, the operation, and the main settings."""
    source = info.get("source", "none")
    if source == "none":
        return "This PNG says nothing about how it was made (no Atelier or A1111 information in it)."
    lines = [f"**Made with** {SOURCES.get(source, source)}"]
    if info.get("operation"):
        lines.append(f"**Operation** {str(info['operation']).replace('_', ' ')}")
    parameters = info.get("parameters") or {}
    settings = []
    if parameters.get("width") and parameters.get("height"):
        settings.append(f"{parameters['width']}×{parameters['height']}")
    settings += [f"{label} {parameters[name]}" for name, label in LABELS.items() if parameters.get(name) is not None]
    if settings:
        lines.append(" · ".join(settings))
    return "\n\n".join(lines)


def shown(path: str | None) -> tuple[Any, str, str, str, dict[str, Any]]:
    """An upload's (preview, summary, prompt, negative prompt, parameters)."""
    if not path:
        return None, "", "", "", {}
    try:
        info = read_png_info(Path(path).read_bytes())
    except ImageRejected as exc:
        raise error(f"Invalid input — image: image {exc}", title="Invalid input") from None
    prompt, negative = info.get("prompt") or "", info.get("negative_prompt") or ""
    return path, summary_of(info), prompt, negative, info.get("parameters") or {}


def generate_values(prompt: str | None, negative: str | None, parameters: dict[str, Any] | None) -> list[Any]:
    """Generate's inputs (``GENERATE_FIELDS``) from what the tab shows; ``gr.skip()`` for what it lacks."""
    parameters = parameters if isinstance(parameters, dict) else {}
    if not prompt and not parameters:
        raise error("Upload a PNG that says how it was made first.", title="Nothing to send")
    values: list[Any] = [prompt or "", negative or ""]
    for name in GENERATE_FIELDS[2:]:
        value = parameters.get(name)
        values.append(value if isinstance(value, int | float) and not isinstance(value, bool) else gr.skip())
    return values


@dataclass(frozen=True)
class PngInfo:
    """The tab's Send to Generate button and what it sends: the prompt, negative prompt and parameters."""

    send: gr.Button
    shown: list[Any]


def render() -> PngInfo:
    with gr.Row():
        with gr.Column():
            upload = gr.File(label="A PNG (Atelier's or A1111's)", file_types=[".png"], elem_id="png-info-file")
            preview = gr.Image(label="Image", type="filepath", interactive=False, elem_id="png-info-preview")
        with gr.Column():
            summary = gr.Markdown(elem_id="png-info-summary")
            prompt = gr.Textbox(label="Prompt", interactive=False, lines=3, elem_id="png-info-prompt")
            negative = gr.Textbox(label="Negative prompt", interactive=False, elem_id="png-info-negative")
            parameters = gr.JSON(label="Parameters", elem_id="png-info-parameters")
            send = gr.Button("Send to Generate", variant="primary", elem_id="png-info-send")
    # No gr.State: it would open a heartbeat stream for every page.
    upload.change(shown, upload, [preview, summary, prompt, negative, parameters], api_visibility="private")
    return PngInfo(send, [prompt, negative, parameters])


def wire_send(tab: PngInfo, tabs: gr.Tabs, generate: Mapping[str, Any]) -> None:
    """Send to Generate: the prompt and settings into Generate's inputs (by send key), and that tab opened."""
    widgets = [generate[f"image_generation.{name}"] for name in GENERATE_FIELDS]

    def send(prompt: str, negative: str, parameters: dict[str, Any] | None) -> list[Any]:
        return [*generate_values(prompt, negative, parameters), gr.Tabs(selected="image_generation")]

    tab.send.click(send, tab.shown, [*widgets, tabs], api_visibility="private")
