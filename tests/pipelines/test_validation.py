"""The registry-driven validation: each bad input names its field."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest
from PIL import Image

from pipelines import OPERATIONS
from pipelines.validation import InvalidSubmission, validate_submission
from tests.conftest import b64, png_bytes

MAX_PIXELS = 40_000_000
RED = Image.new("RGB", (64, 64), (200, 30, 30))
WHITE_MASK = Image.new("L", (64, 64), 255)


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width×height, with one tiny IDAT: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def errors(fields: dict, files: dict | None = None) -> dict[str, list[str]]:
    with pytest.raises(InvalidSubmission) as caught:
        validate_submission(fields, files or {}, MAX_PIXELS)
    return caught.value.details


GEN = {"task_type": "image_generation", "prompt": "a lighthouse at dusk"}
HALF_MASK = Image.new("L", (64, 64), 0)
HALF_MASK.paste(255, (0, 0, 32, 64))
OBJ = {"task_type": "object_removal", "image": b64(RED), "mask": b64(HALF_MASK)}
STYLE = {"task_type": "style_transfer", "image": b64(RED), "parameters": {"style": "mosaic"}}

BAD_INPUTS = [
    # (case, fields, field expected in details, words expected in its message)
    ("missing task_type", {"prompt": "x"}, "task_type", "required"),
    ("unknown task_type", {"task_type": "upscale"}, "task_type", "Unknown task_type"),
    ("task_type not a string", {"task_type": 5}, "task_type", "Unknown task_type"),
    ("missing prompt", {"task_type": "image_generation"}, "prompt", "Prompt is required for image_generation"),
    ("empty prompt", {**GEN, "prompt": ""}, "prompt", "Prompt is required"),
    ("whitespace prompt", {**GEN, "prompt": "  \n\t"}, "prompt", "Prompt is required"),
    ("prompt of 5001 chars", {**GEN, "prompt": "a" * 5001}, "prompt", "at most 5000"),
    ("prompt not a string", {**GEN, "prompt": ["a"]}, "prompt", "string"),
    ("missing image", {"task_type": "background_removal"}, "image", "image is required"),
    ("missing target_image", {"task_type": "face_swap", "image": b64(RED)}, "target_image", "required"),
    ("missing mask", {"task_type": "object_removal", "image": b64(RED)}, "mask", "mask is required"),
    ("invalid base64", {"task_type": "background_removal", "image": "not base64!!"}, "image", "not valid base64"),
    (
        "base64 of text",
        {"task_type": "background_removal", "image": base64.b64encode(b"hello world").decode()},
        "image",
        "could not be decoded",
    ),
    (
        "truncated PNG",
        {"task_type": "background_removal", "image": base64.b64encode(png_bytes(RED)[:-40]).decode()},
        "image",
        "truncated",
    ),
    (
        "decompression bomb",
        {"task_type": "background_removal", "image": base64.b64encode(huge_png_header(60000, 60000)).decode()},
        "image",
        "limit",
    ),
    ("ICO", {"task_type": "background_removal", "image": b64(RED.resize((16, 16)), "ICO")}, "image", "use PNG, JPEG"),
    ("image not a string", {"task_type": "background_removal", "image": 123}, "image", "base64 string"),
    ("unused image field", {**GEN, "mask": b64(RED)}, "mask", "not used by image_generation"),
    ("parameters not an object", {**GEN, "parameters": [1, 2]}, "parameters", "JSON object"),
    ("parameters a string", {**GEN, "parameters": "width=512"}, "parameters", "JSON object"),
    ("width not multiple of 8", {**GEN, "parameters": {"width": 500}}, "parameters.width", "multiple of 8"),
    ("width too small", {**GEN, "parameters": {"width": 32}}, "parameters.width", "greater than or equal to 64"),
    ("height too large", {**GEN, "parameters": {"height": 4096}}, "parameters.height", "less than or equal to 2048"),
    ("width as string", {**GEN, "parameters": {"width": "512"}}, "parameters.width", "valid integer"),
    ("steps as float", {**GEN, "parameters": {"steps": 4.5}}, "parameters.steps", "valid integer"),
    ("steps zero", {**GEN, "parameters": {"steps": 0}}, "parameters.steps", "greater than or equal to 1"),
    ("seed negative", {**GEN, "parameters": {"seed": -1}}, "parameters.seed", "greater than or equal to 0"),
    ("num_images 5", {**GEN, "parameters": {"num_images": 5}}, "parameters.num_images", "less than or equal to 4"),
    ("guidance as bool", {**GEN, "parameters": {"guidance_scale": True}}, "parameters.guidance_scale", "valid number"),
    ("unknown parameter", {**GEN, "parameters": {"widht": 512}}, "parameters.widht", "Unknown parameter"),
    ("unknown top-level field", {**GEN, "promt": "x"}, "promt", "Unknown field"),
    ("mask of another size", {**OBJ, "mask": b64(Image.new("L", (32, 32), 255))}, "mask", "must match"),
    ("empty mask", {**OBJ, "mask": b64(Image.new("L", (64, 64), 0))}, "mask", "no white pixels"),
    ("mask covering everything", {**OBJ, "mask": b64(WHITE_MASK)}, "mask", "covers the whole image"),
    (
        "unknown engine",
        {**OBJ, "parameters": {"engine": "magic"}},
        "parameters.engine",
        "'lama', 'telea' or 'diffusion'",
    ),
    ("unknown style preset", {**STYLE, "parameters": {"style": "van-gogh"}}, "parameters.style", "available: mosaic"),
    ("no style at all", {**STYLE, "parameters": {}}, "parameters.style", "style_image"),
    ("style and style_image", {**STYLE, "style_image": b64(RED)}, "parameters.style", "not both"),
    (
        "strength over 1",
        {**STYLE, "parameters": {"style": "mosaic", "strength": 1.5}},
        "parameters.strength",
        "less than",
    ),
    (
        "unknown rembg model",
        {"task_type": "background_removal", "image": b64(RED), "parameters": {"model": "u3net"}},
        "parameters.model",
        "available: u2net",
    ),
    (
        "bgcolor of two numbers",
        {"task_type": "background_removal", "image": b64(RED), "parameters": {"bgcolor": [0, 0]}},
        "parameters.bgcolor",
        "[r, g, b] or [r, g, b, a], got 2 numbers",
    ),
    (
        "bgcolor out of range",
        {"task_type": "background_removal", "image": b64(RED), "parameters": {"bgcolor": [0, 0, 0, 256]}},
        "parameters.bgcolor",
        "0-255",
    ),
    (
        "face_index negative",
        {"task_type": "face_swap", "image": b64(RED), "target_image": b64(RED), "parameters": {"face_index": -1}},
        "parameters.face_index",
        "greater than or equal",
    ),
]


@pytest.mark.parametrize(("case", "fields", "field", "words"), BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_names_its_field(case: str, fields: dict, field: str, words: str) -> None:
    details = errors(fields)
    assert field in details, details
    assert any(words in message for message in details[field]), details[field]


def test_a_prompt_is_refused_where_it_is_not_used_and_named_once_when_wrong() -> None:
    for task_type in ("background_removal", "face_swap"):
        details = errors({"task_type": task_type, "image": b64(RED), "prompt": "a cat"})
        assert details["prompt"] == [f"prompt is not used by {task_type}"]
    _, job = validate_submission({"task_type": "background_removal", "image": b64(RED), "prompt": ""}, {}, MAX_PIXELS)
    assert job.prompt is None  # an empty prompt is no prompt
    assert errors({"task_type": "image_generation", "prompt": 123})["prompt"] == ["prompt must be a string"]


def test_every_problem_is_reported_at_once() -> None:
    details = errors({"task_type": "image_generation", "prompt": "", "parameters": {"width": 500, "steps": 0}})
    assert set(details) == {"prompt", "parameters.width", "parameters.steps"}


@pytest.mark.parametrize(
    ("bgcolor", "channels"),
    [([0, 255, 0], [0, 255, 0, 255]), ("#00ff00", [0, 255, 0, 255]), ("#00FF0080", [0, 255, 0, 128]),
     ("rgba(0, 255, 0, 0.5)", [0, 255, 0, 128])],
)  # fmt: skip
def test_bgcolor_is_channels_or_a_colour_code(bgcolor: object, channels: list[int]) -> None:
    fields = {"task_type": "background_removal", "image": b64(RED), "parameters": {"bgcolor": bgcolor}}
    _, job = validate_submission(fields, {}, MAX_PIXELS)
    assert job.parameters.bgcolor == channels
    assert "#RRGGBB" in errors({**fields, "parameters": {"bgcolor": "green"}})["parameters.bgcolor"][0]


def test_tiny_valid_image_and_data_url_accepted() -> None:
    submission, job = validate_submission(
        {"task_type": "background_removal", "image": "data:image/png;base64," + b64(Image.new("RGB", (1, 1)))},
        {},
        MAX_PIXELS,
    )
    assert submission.sizes == {"image": (1, 1)}
    assert job.images["image"].size == (1, 1)


def test_multipart_bytes_and_defaults() -> None:
    submission, job = validate_submission(
        {"task_type": "object_removal"}, {"image": png_bytes(RED), "mask": png_bytes(HALF_MASK)}, MAX_PIXELS
    )
    assert submission.image_bytes["image"] == png_bytes(RED)  # stored as uploaded, not re-encoded
    assert submission.parameters == {}
    assert job.parameters.radius == 5


def test_pixel_limit_is_a_setting() -> None:
    with pytest.raises(InvalidSubmission) as caught:
        validate_submission({"task_type": "background_removal", "image": b64(RED)}, {}, max_pixels=64 * 63)
    assert "over the limit of 4,032 pixels" in caught.value.details["image"][0]


def test_registry_routes_the_five_operations_as_designed() -> None:
    queues = {name: op.queue for name, op in OPERATIONS.items()}
    assert (
        queues.items()
        >= {
            "image_generation": "gpu",
            "face_swap": "gpu",
            "style_transfer": "gpu",
            "background_removal": "cpu",
            "object_removal": "cpu",
        }.items()
    )


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "GIF"])
def test_bmp_tiff_and_gif_are_converted_on_arrival(fmt: str) -> None:
    """DESIGN.md: BMP, TIFF and GIF's first frame are converted on arrival (stored as PNG), within the pixel limit."""
    import io

    submission, _ = validate_submission({"task_type": "background_removal", "image": b64(RED, fmt)}, {}, 10**6)
    stored = Image.open(io.BytesIO(submission.image_bytes["image"]))
    assert stored.format == "PNG" and stored.size == (64, 64)
    assert stored.convert("RGB").getpixel((5, 5)) == (200, 30, 30) or fmt == "GIF"  # GIF: a palette colour
    with pytest.raises(InvalidSubmission) as refused:
        validate_submission({"task_type": "background_removal", "image": b64(RED, fmt)}, {}, 1000)
    assert "over the limit of 1,000 pixels" in refused.value.details["image"][0]
