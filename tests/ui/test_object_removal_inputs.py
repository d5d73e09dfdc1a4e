"""How the Remove object tab turns the editor and an uploaded mask into the job's images."""

from __future__ import annotations

import io
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image, ImageDraw

import ui.object_removal
from ui.object_removal import images_from
from ui.uploads import read


def stroke(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle(box, fill=(255, 255, 255, 220))
    return layer


def mask_of(images: dict[str, bytes]) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(images["mask"])).convert("L")) > 127


def test_strokes_become_the_mask(photo: Image.Image) -> None:
    images = images_from({"background": photo, "layers": [stroke(photo.size, (10, 10, 29, 29))]}, None)
    assert mask_of(images).sum() == 400
    assert Image.open(io.BytesIO(read(images["image"]) or b"")).size == photo.size


def test_strokes_and_an_uploaded_mask_combine(photo: Image.Image, tmp_path: Path) -> None:
    uploaded = Image.new("L", photo.size, 0)
    ImageDraw.Draw(uploaded).rectangle((100, 100, 109, 109), fill=255)
    uploaded.save(tmp_path / "mask.png")
    images = images_from(
        {"background": photo, "layers": [stroke(photo.size, (10, 10, 29, 29))]}, str(tmp_path / "mask.png")
    )
    assert mask_of(images).sum() == 400 + 100


def test_nothing_painted_and_no_mask_says_what_to_do(photo: Image.Image) -> None:
    with pytest.raises(gr.Error, match="Paint over the object"):
        images_from({"background": photo, "layers": []}, None)


def test_no_photo_tells_the_page_to_upload_one_and_a_script_how_to_pass_it(
    photo: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(gr.Error) as page:
        images_from({"background": None, "layers": []}, None)
    assert page.value.message == "Upload a photo first."  # no API talk on the page
    monkeypatch.setattr(ui.object_removal, "from_api", lambda: True)
    with pytest.raises(gr.Error, match="image-editor value"):
        images_from({"background": None, "layers": []}, None)


def test_the_photo_goes_as_uploaded_and_a_mask_alone_is_not_decoded(tmp_path: Path) -> None:
    (tmp_path / "photo.jpg").write_bytes(b"not decoded here")
    (tmp_path / "mask.png").write_bytes(b"nor this")
    images = images_from({"background": str(tmp_path / "photo.jpg"), "layers": []}, str(tmp_path / "mask.png"))
    assert images == {"image": str(tmp_path / "photo.jpg"), "mask": b"nor this"}  # the job system checks them
