"""PNG output: exact pixels, provenance readable by other tools, and the fast path's speed-up is real."""

from __future__ import annotations

import io
import json
import zlib

import numpy as np
import pytest
from PIL import Image

from pipelines import images
from pipelines.images import ImageRejected, encode_png, open_image

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


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_the_web_side_finds_every_truncation_without_decoding(fmt: str, photo: Image.Image) -> None:
    """decode=False: header and end-marker checks only, yet no cut of the file gets through."""
    buffer = io.BytesIO()
    photo.resize((120, 80)).save(buffer, fmt)
    data = buffer.getvalue()
    lazy = open_image(data, 10**6, decode=False)
    assert lazy.size == (120, 80) and lazy.format == fmt
    missed = []
    for cut in range(len(data) // 4, len(data)):
        try:
            open_image(data[:cut], 10**6, decode=False)
            missed.append(cut)
        except ImageRejected as exc:
            assert str(exc) in ("is truncated or corrupt", "could not be decoded as an image (use PNG, JPEG or WebP)")
    assert missed == []


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_an_exif_rotated_upload_has_the_size_the_user_sees(fmt: str, photo: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    buffer = io.BytesIO()
    photo.resize((120, 80)).save(buffer, fmt, exif=exif)
    assert open_image(buffer.getvalue(), 10**6, decode=False).size == (80, 120)
    assert open_image(buffer.getvalue(), 10**6).size == (80, 120)


def test_a_mask_sized_like_the_file_of_a_rotated_photo_is_told_why_it_does_not_match(photo: Image.Image) -> None:
    from pipelines.validation import InvalidSubmission, validate_submission

    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    photo.resize((64, 48)).save(buffer, "JPEG", exif=exif)
    mask = io.BytesIO()
    Image.new("L", (64, 48), 255).save(mask, "PNG")
    with pytest.raises(InvalidSubmission) as refused:
        validate_submission(
            {"task_type": "object_removal"}, {"image": buffer.getvalue(), "mask": mask.getvalue()}, 10**6
        )
    (message,) = refused.value.details["mask"]
    assert message.startswith("mask is 64×48 but image is 48×64 as displayed (its EXIF orientation turns it)")


def test_a_large_image_deflated_in_parallel_slices_is_one_valid_stream() -> None:
    """Above PARALLEL_DEFLATE_BYTES the IDAT is compressed in slices; any PNG reader must see one image."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    pixels[::7] = 0  # some structure, so slices compress differently
    image = Image.fromarray(pixels)
    assert image.width * 3 * image.height > images.PARALLEL_DEFLATE_BYTES
    png = encode_png(image, {"atelier:operation": "test"})
    decoded = Image.open(io.BytesIO(png))
    decoded.load()
    assert np.array_equal(np.asarray(decoded), pixels)
    assert decoded.text["atelier:operation"] == "test"
    raw = png[png.index(b"IDAT") + 4 : png.rindex(b"IEND") - 8]  # the zlib stream of the one IDAT chunk
    assert zlib.decompressobj().decompress(raw)[:1] == b"\x02"  # Python's own zlib reads it too
