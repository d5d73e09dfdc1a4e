"""A1111's parameters text written and read back, and PNG info from Atelier's and A1111's PNGs."""

from __future__ import annotations

import io

import pytest
from PIL import Image, PngImagePlugin

from pipelines.images import ImageRejected, encode_png
from pipelines.png_info import a1111_parameters, model_name, parse_a1111, read_png_info, sampler_name

A1111_TEXT = (
    "masterpiece, a cat in a hat,\nsitting on a chair\n"
    "Negative prompt: lowres, bad hands\n"
    "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 3723152915, Size: 512x768, Model hash: 6ce0161689, "
    'Model: v1-5-pruned-emaonly, Lora hashes: "a: 1, b: 2", Version: v1.10.1'
)


def test_a1111_text_is_parsed_into_atelier_names() -> None:
    info = parse_a1111(A1111_TEXT)
    assert info["prompt"] == "masterpiece, a cat in a hat,\nsitting on a chair"
    assert info["negative_prompt"] == "lowres, bad hands"
    assert info["parameters"] == {
        "steps": 28,
        "sampler": "DPM++ 2M Karras",
        "guidance_scale": 6.5,
        "seed": 3723152915,
        "width": 512,
        "height": 768,
        "model": "v1-5-pruned-emaonly",
    }


def test_written_text_reads_back() -> None:
    parameters = {"negative_prompt": "blurry", "steps": 4, "guidance_scale": 0.0, "width": 512, "height": 512}
    metadata = {"sampler": "Euler", "seed": 7, "model": "stabilityai/sd-turbo"}
    text = a1111_parameters("a red shoe", parameters, metadata)
    settings = "Steps: 4, Sampler: Euler, CFG scale: 0, Seed: 7, Size: 512x512, Model: sd-turbo"
    assert text == f"a red shoe\nNegative prompt: blurry\n{settings}"
    info = parse_a1111(text)
    assert info["prompt"] == "a red shoe" and info["negative_prompt"] == "blurry"
    assert info["parameters"]["seed"] == 7 and info["parameters"]["guidance_scale"] == 0
    no_negative = a1111_parameters("x", {"steps": 1, "width": 64, "height": 64}, {"seed": 1})
    assert "Negative prompt" not in no_negative and "negative_prompt" not in parse_a1111(no_negative)


def test_names_of_samplers_and_models() -> None:
    class EulerAncestralDiscreteScheduler: ...

    class FancyScheduler: ...

    assert sampler_name(EulerAncestralDiscreteScheduler()) == "Euler a" and sampler_name(FancyScheduler()) == "Fancy"
    assert model_name("stabilityai/sd-turbo") == "sd-turbo" and model_name("/models/tiny-sd/") == "tiny-sd"


def png_with(text: dict[str, str]) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def test_png_info_of_atelier_a1111_and_plain_pngs() -> None:
    atelier = encode_png(
        Image.new("RGB", (4, 4)),
        {
            "atelier:operation": "image_generation",
            "atelier:parameters": {"steps": 2, "seed": None, "negative_prompt": "dark"},
            "atelier:prompt": "a lamp",
            "atelier:seed": 99,
        },
    )
    assert read_png_info(atelier) == {
        "operation": "image_generation",
        "prompt": "a lamp",
        "negative_prompt": "dark",
        "parameters": {"steps": 2, "seed": 99, "negative_prompt": "dark"},
        "source": "atelier",
    }
    assert read_png_info(png_with({"parameters": A1111_TEXT}))["source"] == "a1111"
    assert read_png_info(png_with({"Comment": "hello"})) == {"parameters": {}, "source": "none"}
    with pytest.raises(ImageRejected):
        read_png_info(b"not an image")
