"""The LaMa engine on a tiny TorchScript model with big-lama.pt's I/O, called as a plain script would.

The tiny model lives in its own folder (never the session's shared models folder, where it would
make ``lama`` the default engine for every other test and worker); the settings these tests pass to
the engine point ``lama_model`` at it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines.base import JobInput, ModelUnavailable, PipelineError
from pipelines.lama import LAMA_URL, LAMA_WEIGHTS, crop_boxes, get_lama, inpaint_lama, lama_key
from pipelines.models import load_counts
from pipelines.object_removal import OPERATION, ObjectRemovalParameters, mask_array, remove_object
from settings import Settings, get_settings
from tests.support.mirror import dead_address, serving_mirror
from tests.support.tiny_lama import build_tiny_lama

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


@pytest.fixture(scope="session")
def tiny_lama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lama(tmp_path_factory.mktemp("lama") / "big-lama.pt")


def with_lama(path: Path | None, **changes: Any) -> Settings:
    """The process-wide settings with ``lama_model`` (and any other ``changes``) replaced."""
    return get_settings().model_copy(update={"lama_model": path, **changes})


@pytest.fixture
def lama_settings(tiny_lama: Path) -> Settings:
    return with_lama(tiny_lama)


def run(
    image: Image.Image, mask: Image.Image, settings: Settings | None = None, **params: Any
) -> tuple[Image.Image, dict[str, Any], list[tuple[float, str]]]:
    reports: list[tuple[float, str]] = []
    job = JobInput(
        images={"image": image, "mask": mask},
        parameters=ObjectRemovalParameters(**params),
        settings=settings or get_settings(),
    )
    output = remove_object(job, lambda fraction, message, preview=None: reports.append((fraction, message)))
    return output.image, output.metadata, reports


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Random pixels: any pixel the engine touches shows."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def box_mask(size: tuple[int, int], *boxes: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    for box in boxes:
        ImageDraw.Draw(mask).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
    return mask


def seen(settings: Settings) -> tuple[int, int]:
    """(H, W) of the last input the cached tiny model got."""
    height, width = get_lama(settings).module.seen.tolist()
    return height, width


def test_lama_fills_the_mask_and_keeps_every_other_pixel(
    lama_settings: Settings, photo: Image.Image, mask: Image.Image
) -> None:
    result, metadata, reports = run(photo, mask, lama_settings, engine="lama")
    before, after, inside = np.asarray(photo), np.asarray(result), mask_array(mask)
    assert result.size == photo.size and result.mode == "RGB"
    assert np.array_equal(before[~inside], after[~inside])  # the tiny model blurs all: only the hole is pasted
    assert np.abs(before[inside].astype(int) - after[inside].astype(int)).mean() > 5
    assert metadata["engine"] == "lama" and metadata["device"] == "cpu"
    assert metadata["crop"] == [0, 0, 600, 400]  # under the crop trigger: the whole photo is context
    assert set(metadata["timings"]) == {"load", "run"}
    messages = " | ".join(message for _, message in reports)
    assert "Loading LaMa" in messages and "Inpainting with LaMa" in messages and "Pasting" in messages
    assert reports[-1] == (1.0, "Object removed")
    assert [fraction for fraction, _ in reports] == sorted(fraction for fraction, _ in reports)


def test_filled_area_takes_the_colour_of_its_surroundings(lama_settings: Settings) -> None:
    image = Image.new("RGB", (96, 96), (40, 160, 90))
    ImageDraw.Draw(image).rectangle((40, 40, 56, 56), fill=(255, 0, 0))
    result, _, _ = run(image, box_mask(image.size, (38, 38, 59, 59)), lama_settings, engine="lama")
    patch = np.asarray(result)[42:55, 42:55].reshape(-1, 3).mean(axis=0)
    assert np.allclose(patch, (40, 160, 90), atol=2), patch


def test_sizes_that_are_not_multiples_of_8_are_padded_then_cropped_back(
    lama_settings: Settings, tiny_lama: Path
) -> None:
    image = noise(101, 77)
    result, _, _ = run(
        image, box_mask(image.size, (90, 60, 101, 77)), lama_settings, engine="lama"
    )  # a hole at the corner
    assert result.size == (101, 77)
    assert seen(lama_settings) == (80, 104)


def test_crop_strategy_feeds_the_model_only_the_crop(lama_settings: Settings, tiny_lama: Path) -> None:
    image = noise(2000, 1200)
    mask = box_mask(image.size, (900, 500, 960, 540))
    result, metadata, reports = run(image, mask, lama_settings, engine="lama")
    x0, y0, x1, y1 = 900 - 128, 500 - 128, 960 + 128, 540 + 128
    assert metadata["crop"] == [x0, y0, x1, y1] and metadata["crops"] == [[x0, y0, x1, y1]]
    assert seen(lama_settings) == (y1 - y0, 320)  # 296 rows; 316 columns padded to 320
    before, after = np.asarray(image), np.asarray(result)
    outside_crop = np.ones((1200, 2000), bool)
    outside_crop[y0:y1, x0:x1] = False
    assert np.array_equal(before[outside_crop], after[outside_crop])
    inside = mask_array(mask)
    assert np.array_equal(before[~inside], after[~inside]) and not np.array_equal(before[inside], after[inside])
    assert any("316×296 px" in message for _, message in reports)


def test_crop_is_clamped_to_the_image(lama_settings: Settings) -> None:
    image = noise(1200, 900)
    _, metadata, _ = run(image, box_mask(image.size, (0, 850, 40, 900)), lama_settings, engine="lama")
    assert metadata["crop"] == [0, 850 - 128, 40 + 128, 900]


def test_small_mask_on_a_4k_photo(lama_settings: Settings, tiny_lama: Path) -> None:
    image = noise(4096, 2160)
    mask = box_mask(image.size, (3000, 1500, 3064, 1564))
    result, metadata, _ = run(image, mask, lama_settings, engine="lama")
    assert result.size == (4096, 2160)
    assert metadata["crop"] == [2872, 1372, 3192, 1692] and seen(lama_settings) == (320, 320)
    inside = mask_array(mask)
    assert np.array_equal(np.asarray(image)[~inside], np.asarray(result)[~inside])


def test_separate_regions_get_their_own_crops_and_close_ones_share_one() -> None:
    mask = np.zeros((1000, 3000), bool)
    mask[100:120, 100:120] = True
    mask[150:170, 300:320] = True  # 180 px away: the grown boxes overlap, one crop
    mask[800:820, 2500:2520] = True
    assert crop_boxes(mask, 128) == [(0, 0, 448, 298), (2372, 672, 2648, 948)]
    assert crop_boxes(mask, 0) == [(100, 100, 120, 120), (300, 150, 320, 170), (2500, 800, 2520, 820)]


def test_two_far_apart_regions_are_inpainted_crop_by_crop(lama_settings: Settings) -> None:
    image = noise(3000, 1000)
    mask = box_mask(image.size, (100, 100, 120, 120), (2500, 800, 2520, 820))
    result, metadata, reports = run(image, mask, lama_settings, engine="lama")
    assert metadata["crops"] == [[0, 0, 248, 248], [2372, 672, 2648, 948]]
    assert metadata["crop"] == [0, 0, 2648, 948]
    assert sum("region" in message for _, message in reports) == 2
    inside = mask_array(mask)
    assert np.array_equal(np.asarray(image)[~inside], np.asarray(result)[~inside])


def test_a_crop_over_the_resize_limit_is_scaled_down_for_the_model(
    lama_settings: Settings, photo: Image.Image, mask: Image.Image
) -> None:
    result, metadata, _ = run(photo, mask, with_lama(lama_settings.lama_model, lama_resize_limit=256), engine="lama")
    assert metadata["model_input_sizes"] == [[256, 171]]  # 600×400 scaled to fit 256
    before, after, inside = np.asarray(photo), np.asarray(result), mask_array(mask)
    assert np.array_equal(before[~inside], after[~inside])
    assert np.abs(before[inside].astype(int) - after[inside].astype(int)).mean() > 5
    # Scaled back up, every hole pixel got a fill from its surroundings, not a black or stale value.
    full, _, _ = run(photo, mask, lama_settings, engine="lama", dilate=0)
    assert np.abs(np.asarray(full)[inside].astype(int) - after[inside].astype(int)).mean() < 40


def test_resize_keeps_thin_holes(lama_settings: Settings) -> None:
    rgb = np.asarray(noise(900, 300))
    mask = np.zeros((300, 900), bool)
    mask[150, 10:890] = True  # one pixel high: it must survive being scaled down 7×
    filled = inpaint_lama(get_lama(lama_settings), rgb, mask, crop_trigger=10_000, resize_limit=128)
    assert filled.model_sizes == [(128, 43)]
    assert np.array_equal(filled.image[~mask], rgb[~mask]) and not np.array_equal(filled.image[mask], rgb[mask])


def test_dilate_applies_to_lama(lama_settings: Settings, photo: Image.Image, mask: Image.Image) -> None:
    plain, _, _ = run(photo, mask, lama_settings, engine="lama")
    grown, metadata, _ = run(photo, mask, lama_settings, engine="lama", dilate=8)
    changed = lambda out: (np.asarray(out) != np.asarray(photo)).any(axis=2).sum()  # noqa: E731
    assert metadata["masked_pixels"] > int(mask_array(mask).sum())
    assert changed(grown) > changed(plain)


def test_alpha_channel_survives_lama(lama_settings: Settings, photo: Image.Image, mask: Image.Image) -> None:
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    result, _, _ = run(rgba, mask, lama_settings, engine="lama")
    assert result.mode == "RGBA" and np.asarray(result.getchannel("A")).max() == 128


def test_the_model_loads_once_per_process(lama_settings: Settings, photo: Image.Image, mask: Image.Image) -> None:
    first = run(photo, mask, lama_settings, engine="lama")[1]
    second = run(photo, mask, lama_settings, engine="lama")[1]
    assert first["model_loads_in_process"] == second["model_loads_in_process"] == 1
    assert load_counts[lama_key(lama_settings)] == 1 and str(lama_settings.lama_model) in lama_key(lama_settings)


def test_default_engine_is_lama_only_when_its_weights_are_there(
    tiny_lama: Path, tmp_path: Path, photo: Image.Image, mask: Image.Image
) -> None:
    absent = with_lama(tmp_path / "absent.pt")
    assert OPERATION.default_engine(absent) == "telea" and run(photo, mask, absent)[1]["engine"] == "telea"
    present = with_lama(tiny_lama)
    assert OPERATION.default_engine(present) == "lama" and run(photo, mask, present)[1]["engine"] == "lama"
    assert run(photo, mask, present, engine="telea")[1]["engine"] == "telea"


def test_default_path_is_in_the_models_folder(tmp_path: Path) -> None:
    settings = with_lama(None, models_dir=tmp_path)
    assert OPERATION.default_engine(settings) == "telea"
    build_tiny_lama(tmp_path / "lama" / "big-lama.pt")
    assert OPERATION.default_engine(settings) == "lama"


def test_missing_weights_name_the_path_and_the_download(tmp_path: Path, photo: Image.Image, mask: Image.Image) -> None:
    with pytest.raises(ModelUnavailable) as error:
        run(photo, mask, with_lama(tmp_path / "lama" / "big-lama.pt"), engine="lama")
    message = str(error.value)
    assert str(tmp_path / "lama" / "big-lama.pt") in message and LAMA_URL in message
    assert "download-models" in message and "use engine 'telea'" in message


@pytest.mark.parametrize("content", [b"", b"not a torchscript file" * 50], ids=["empty", "garbage"])
def test_a_corrupt_file_is_a_readable_error(
    tmp_path: Path, photo: Image.Image, mask: Image.Image, content: bytes
) -> None:
    path = tmp_path / "big-lama.pt"
    path.write_bytes(content)
    with pytest.raises(ModelUnavailable, match="corrupt or incomplete") as error:
        run(photo, mask, with_lama(path), engine="lama")
    message = str(error.value)
    assert str(path) in message and LAMA_URL in message and "\n" not in message and len(message) < 600


def test_a_model_with_the_wrong_io_is_a_readable_error(tmp_path: Path, photo: Image.Image, mask: Image.Image) -> None:
    import torch

    class NotLama(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return image

    path = tmp_path / "big-lama.pt"
    torch.jit.save(torch.jit.script(NotLama()), str(path))
    with pytest.raises(PipelineError, match="must be a LaMa export") as error:
        run(photo, mask, with_lama(path), engine="lama")
    assert "\n" not in str(error.value)


# -- downloads -------------------------------------------------------------------------------------
def test_the_weights_are_declared_with_their_source_and_checksum(tmp_path: Path) -> None:
    settings = with_lama(None, models_dir=tmp_path)
    assert (
        LAMA_WEIGHTS.target(settings) == tmp_path / "lama" / "big-lama.pt" and LAMA_WEIGHTS.location(settings) is None
    )
    assert LAMA_WEIGHTS.source.url == LAMA_URL and LAMA_WEIGHTS.source.md5 == "e3aa4aaa15225a33ec84f9f4bc47e500"
    assert (LAMA_WEIGHTS.name, LAMA_WEIGHTS.license, LAMA_WEIGHTS.default) == ("big-lama", "Apache-2.0", True)


def test_a_lama_job_downloads_big_lama_on_first_use(
    tmp_path: Path, tiny_lama: Path, photo: Image.Image, mask: Image.Image
) -> None:
    """From the mirror (a loopback server) into the models folder, then the job runs on it."""
    payload = tiny_lama.read_bytes()
    with serving_mirror() as mirror:
        mirror.put("lama/big-lama.pt", payload)
        mirror.put("lama/big-lama.pt.sha256", hashlib.sha256(payload).hexdigest().encode())  # not IOPaint's file
        settings = with_lama(None, models_dir=tmp_path, model_mirror=mirror.url)
        _, metadata, reports = run(photo, mask, settings, engine="lama")
    assert (tmp_path / "lama" / "big-lama.pt").read_bytes() == payload and metadata["engine"] == "lama"
    assert any(message.startswith("Downloading big-lama.pt") for _, message in reports)


def test_offline_the_job_fails_with_the_usual_advice_and_the_reason(
    tmp_path: Path, photo: Image.Image, mask: Image.Image
) -> None:
    with dead_address() as url, pytest.raises(ModelUnavailable) as error:
        run(photo, mask, with_lama(None, models_dir=tmp_path, model_mirror=url), engine="lama")
    message = str(error.value)
    assert "download-models" in message and "use engine 'telea'" in message
    assert f"The download on first use failed: Could not download big-lama.pt from {url}/lama/big-lama.pt" in message
    assert not (tmp_path / "lama" / "big-lama.pt").exists()
