"""The fast style engine on its shipped ONNX weights."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines.base import JobInput, JobRequest, PipelineError
from pipelines.models import load_counts
from pipelines.style_transfer import STYLE_PRESETS, StyleTransferParameters, fast_key, transfer_style
from settings import get_settings


def stylize(images: dict[str, Image.Image], **params: object) -> tuple[Image.Image, dict, list[float]]:
    fractions: list[float] = []
    output = transfer_style(
        JobInput(images=images, parameters=StyleTransferParameters(**params), settings=get_settings()),
        lambda fraction, message: fractions.append(fraction),
    )
    return output.image, output.metadata, fractions


def difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=float) - np.asarray(b.convert("RGB"), dtype=float)).mean())


def test_preset_repaints_the_photo_at_its_size(photo: Image.Image) -> None:
    result, metadata, fractions = stylize({"image": photo}, style="mosaic")
    assert result.size == photo.size
    assert difference(result, photo) > 20
    assert metadata["style"] == "mosaic"
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_presets_differ_from_each_other(photo: Image.Image) -> None:
    small = photo.resize((150, 100))
    mosaic, _, _ = stylize({"image": small}, style="mosaic")
    starry, _, _ = stylize({"image": small}, style="starry-night")
    assert difference(mosaic, starry) > 10


def test_strength_zero_keeps_the_photo(photo: Image.Image) -> None:
    result, _, _ = stylize({"image": photo}, style="fauve", strength=0.0)
    assert difference(result, photo) < 3


def test_big_photo_is_processed_smaller_and_scaled_back(photo: Image.Image) -> None:
    result, _, _ = stylize({"image": photo}, style="comic", max_size=128)
    assert result.size == photo.size


def test_any_picture_can_be_the_style(photo: Image.Image) -> None:
    stripes = Image.fromarray(((np.indices((256, 256)).sum(axis=0) // 16 % 2) * 255).astype(np.uint8)).convert("RGB")
    result, metadata, _ = stylize({"image": photo, "style_image": stripes})
    assert result.size == photo.size
    assert metadata["style"] == "style_image"
    assert difference(result, photo) > 10


def test_the_network_loads_once_per_process(photo: Image.Image) -> None:
    small = photo.resize((64, 64))
    for _ in range(3):
        stylize({"image": small}, style="sketch")
    assert load_counts[fast_key(get_settings())] == 1


def test_diffusion_engine_needs_a_text_prompt(photo: Image.Image) -> None:
    # The engine itself is tested in test_diffusion.py; a style_image alone gives it nothing to follow.
    with pytest.raises(PipelineError, match=r"style preset .* or a prompt"):
        stylize({"image": photo, "style_image": photo}, engine="diffusion")


def test_presets_have_thumbnails() -> None:
    from pathlib import Path

    styles = Path(__file__).resolve().parents[2] / "assets" / "styles"
    assert all((styles / f"{name}.jpg").is_file() for name in STYLE_PRESETS)


@pytest.mark.parametrize(
    ("fields", "parameters", "errors"),
    [
        ({"prompt": "an oil painting"}, {"engine": "diffusion"}, set()),  # a prompt alone is enough
        ({}, {"engine": "diffusion", "style": "mosaic"}, set()),
        ({}, {"engine": "diffusion"}, {"prompt"}),
        ({"prompt": "   "}, {"engine": "diffusion"}, {"prompt"}),
        ({"style_image": True, "prompt": "ink"}, {"engine": "diffusion"}, {"style_image"}),
        ({"prompt": "an oil painting"}, {"engine": "fast"}, {"parameters.style"}),
    ],
)
def test_submit_checks_what_each_engine_follows(
    photo: Image.Image, fields: dict[str, object], parameters: dict[str, object], errors: set[str]
) -> None:
    """Refused at submit (a 400), not later in the worker."""
    from pipelines.style_transfer import check

    images = {"image": photo, **({"style_image": photo} if fields.get("style_image") else {})}
    prompt = fields.get("prompt")
    job = JobRequest(images, StyleTransferParameters(**parameters), prompt if isinstance(prompt, str) else None)
    assert set(check(job)) == errors
