"""PNG output: exact pixels, provenance readable by other tools, and the fast path's speed-up is real."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from pipelines.images import encode_png

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "I;16", "1"])
def test_pixels_survive_exactly(mode: str, photo: Image.Image) -> None:
    image = (
        photo.resize((97, 61)).convert(mode)
        if mode != "I;16"
        else Image.fromarray(RNG.integers(0, 65535, (61, 97), dtype=np.uint16))
    )
    decoded = Image.open(io.BytesIO(encode_png(image)))
    assert decoded.format == "PNG" and decoded.size == image.size
    assert np.array_equal(np.asarray(decoded), np.asarray(image))


def test_provenance_chunks_are_readable_and_unicode_safe() -> None:
    text = {"Software": "Atelier", "atelier:prompt": "un café ☕ <b>bold</b>", "atelier:parameters": {"steps": 4}}
    decoded = Image.open(io.BytesIO(encode_png(Image.new("RGB", (8, 8)), text)))
    assert decoded.text["Software"] == "Atelier"
    assert decoded.text["atelier:prompt"] == "un café ☕ <b>bold</b>"
    assert json.loads(decoded.text["atelier:parameters"]) == {"steps": 4}


def test_a_photo_compresses_about_as_well_as_pillow(photo: Image.Image) -> None:
    ours = len(encode_png(photo))
    buffer = io.BytesIO()
    photo.save(buffer, "PNG", compress_level=1)
    assert ours < 1.15 * len(buffer.getvalue())
