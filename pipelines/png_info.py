"""How a PNG was made: the ``parameters`` text other tools read (A1111's format), and reading back
either that or Atelier's own chunks."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from typing import Any

from PIL import Image

from pipelines.images import ImageRejected

# diffusers scheduler classes by the names A1111 (and the sites that read its text) use.
SAMPLERS = {
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DPMSolverSinglestepScheduler": "DPM++ SDE",
    "DDIMScheduler": "DDIM",
    "PNDMScheduler": "PLMS",
    "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun",
    "KDPM2DiscreteScheduler": "DPM2",
    "UniPCMultistepScheduler": "UniPC",
    "LCMScheduler": "LCM",
    "DDPMScheduler": "DDPM",
}
# A1111's own pattern for one "Name: value" of its settings line; a value may be quoted.
SETTING = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
A1111_NAMES = {"Steps": "steps", "CFG scale": "guidance_scale", "Seed": "seed", "Sampler": "sampler", "Model": "model"}


def sampler_name(scheduler: Any) -> str:
    name = type(scheduler).__name__
    return SAMPLERS.get(name, name.removesuffix("Scheduler"))


def model_name(model: str) -> str:
    """A model id or folder as A1111 names models: its last part (``stabilityai/sd-turbo`` → ``sd-turbo``)."""
    return re.split(r"[\\/]", model.rstrip("/\\"))[-1] or model


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def a1111_parameters(prompt: str, parameters: Mapping[str, Any], metadata: Mapping[str, Any]) -> str:
    """The ``parameters`` text A1111 writes into its PNGs, for a generated image."""
    lines = [prompt]
    if parameters.get("negative_prompt"):
        lines.append(f"Negative prompt: {parameters['negative_prompt']}")
    settings = [
        ("Steps", parameters.get("steps", metadata.get("steps"))),
        ("Sampler", metadata.get("sampler")),
        ("CFG scale", parameters.get("guidance_scale")),
        ("Seed", metadata.get("seed")),
        ("Size", f"{parameters.get('width')}x{parameters.get('height')}"),
        ("Model", model_name(str(metadata["model"])) if metadata.get("model") else None),
    ]
    lines.append(", ".join(f"{name}: {_number(value)}" for name, value in settings if value is not None))
    return "\n".join(lines)


def parse_a1111(text: str) -> dict[str, Any]:
    """A1111's ``parameters`` text as the prompt, the negative prompt and Atelier's parameter names
    (steps, guidance_scale, seed, width, height; its sampler and model as they are written)."""
    lines = text.strip().split("\n")
    settings_line = lines[-1] if len(lines) > 1 and len(SETTING.findall(lines[-1])) >= 3 else ""
    body = lines[:-1] if settings_line else lines
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in body:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line.removeprefix("Negative prompt:").strip()
        (negative if in_negative else prompt).append(line)
    parameters: dict[str, Any] = {}
    for name, raw in SETTING.findall(settings_line):
        value = raw.strip()
        if value.startswith('"'):
            value = json.loads(value)
        if name.strip() == "Size" and re.fullmatch(r"\d+x\d+", value):
            parameters["width"], parameters["height"] = (int(part) for part in value.split("x"))
        elif name.strip() in A1111_NAMES:
            parameters[A1111_NAMES[name.strip()]] = _parsed(value)
    info: dict[str, Any] = {
        "operation": "image_generation",
        "prompt": "\n".join(prompt).strip(),
        "parameters": parameters,
    }
    if negative:
        info["negative_prompt"] = "\n".join(negative).strip()
    return info


def _parsed(value: str) -> Any:
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value else number


def read_png_info(data: bytes) -> dict[str, Any]:
    """How the image was made, from its text chunks: ``source`` ``atelier`` (Atelier's own chunks),
    ``a1111`` (a ``parameters`` text only) or ``none``."""
    try:
        image = Image.open(io.BytesIO(data))
    except Exception:
        raise ImageRejected("could not be read as an image (send a PNG)") from None
    text = {key: value for key, value in image.info.items() if isinstance(key, str) and isinstance(value, str)}
    if "atelier:operation" in text:
        return _atelier_info(text)
    if "parameters" in text:
        return {**parse_a1111(text["parameters"]), "source": "a1111"}
    return {"parameters": {}, "source": "none"}


def _atelier_info(text: Mapping[str, str]) -> dict[str, Any]:
    def decoded(key: str) -> Any:
        try:
            return json.loads(text[key])
        except (KeyError, ValueError):
            return text.get(key)

    parameters = decoded("atelier:parameters")
    parameters = dict(parameters) if isinstance(parameters, dict) else {}
    if "atelier:seed" in text and parameters.get("seed") is None:
        parameters["seed"] = decoded("atelier:seed")  # the seed drawn for a job that named none
    info: dict[str, Any] = {"operation": text["atelier:operation"], "parameters": parameters, "source": "atelier"}
    if "atelier:prompt" in text:
        info["prompt"] = text["atelier:prompt"]
    if parameters.get("negative_prompt"):
        info["negative_prompt"] = parameters["negative_prompt"]
    return info
