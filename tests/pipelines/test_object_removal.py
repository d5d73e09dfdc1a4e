"""OpenCV inpainting on a real photo, called as a plain script would."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines.base import JobInput, ModelUnavailable
from pipelines.object_removal import ObjectRemovalParameters, mask_array, remove_object
from settings import get_settings


def run(photo: Image.Image, mask: Image.Image, **params: object) -> tuple[Image.Image, dict, list[tuple[float, str]]]:
    reports: list[tuple[float, str]] = []
    output = remove_object(
        JobInput(
            images={"image": photo, "mask": mask}, parameters=ObjectRemovalParameters(**params), settings=get_settings()
        ),
        lambda fraction, message: reports.append((fraction, message)),
    )
    return output.image, output.metadata, reports


def test_telea_fills_the_mask_and_keeps_the_rest(photo: Image.Image, mask: Image.Image) -> None:
    result, metadata, reports = run(photo, mask)
    before, after = np.asarray(photo), np.asarray(result)
    inside = mask_array(mask)
    assert result.size == photo.size
    assert metadata["engine"] == "telea"  # no LaMa weights in the test models folder
    assert np.array_equal(before[~inside], after[~inside])
    assert np.abs(before[inside].astype(int) - after[inside].astype(int)).mean() > 5
    assert reports[-1][0] == 1.0
    assert [fraction for fraction, _ in reports] == sorted(fraction for fraction, _ in reports)


def test_filled_area_takes_the_colour_of_its_surroundings() -> None:
    image = Image.new("RGB", (96, 96), (40, 160, 90))
    ImageDraw.Draw(image).rectangle((40, 40, 56, 56), fill=(255, 0, 0))  # a red object on green
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).rectangle((38, 38, 58, 58), fill=255)
    result, _, _ = run(image, mask)
    patch = np.asarray(result)[42:55, 42:55].reshape(-1, 3).mean(axis=0)
    assert np.allclose(patch, (40, 160, 90), atol=12), patch


def test_dilate_grows_the_changed_area(photo: Image.Image, mask: Image.Image) -> None:
    plain, _, _ = run(photo, mask)
    grown, metadata, _ = run(photo, mask, dilate=8)
    changed = lambda out: (np.asarray(out) != np.asarray(photo)).any(axis=2).sum()  # noqa: E731
    assert metadata["masked_pixels"] > int(mask_array(mask).sum())
    assert changed(grown) > changed(plain)


def test_alpha_channel_survives(mask: Image.Image, photo: Image.Image) -> None:
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    result, _, _ = run(rgba, mask)
    assert result.mode == "RGBA"
    assert np.asarray(result.getchannel("A")).max() == 128


def test_lama_without_weights_fails_fast_with_a_clear_message(photo: Image.Image, mask: Image.Image) -> None:
    # The session's models folder has no big-lama.pt (tests/pipelines/test_object_removal_lama.py
    # covers LaMa on its tiny model); the diffusion engine's own tests cover its missing model.
    with pytest.raises(ModelUnavailable, match=r"big-lama\.pt.*use engine 'telea'"):
        run(photo, mask, engine="lama")
