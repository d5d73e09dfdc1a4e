"""Background removal through rembg's real sessions, on tiny models whose mask is 'the bright part'."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines.background_removal import (
    OPERATION,
    REMBG_MODELS,
    BackgroundRemovalParameters,
    RembgEngine,
    rembg_home,
    remove_background,
    require_model,
    session_key,
)
from pipelines.base import JobInput, ModelUnavailable
from pipelines.models import load_counts, load_once
from settings import get_settings
from tests.support.tiny_onnx import build_background_model, build_rembg_models

SUBJECT = (150, 100, 350, 260)  # the light rectangle (left, top, right, bottom), inclusive


@pytest.fixture(scope="module", autouse=True)
def tiny_models() -> None:
    home = rembg_home(get_settings())
    build_rembg_models(home, ("u2net",))  # rembg's flat layout: <home>/u2net.onnx
    isnet = home / "models" / "isnet-general-use" / "isnet-general-use.onnx"  # where rembg downloads to
    if not isnet.exists():
        build_background_model(isnet)


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    image = Image.new("RGB", (500, 360), (30, 35, 40))
    ImageDraw.Draw(image).rectangle(SUBJECT, fill=(230, 200, 170))
    return image


def remove(image: Image.Image, **params: Any) -> tuple[Image.Image, dict[str, Any], list[tuple[float, str]]]:
    steps: list[tuple[float, str]] = []
    output = remove_background(
        JobInput(images={"image": image}, parameters=BackgroundRemovalParameters(**params), settings=get_settings()),
        lambda fraction, message, preview=None: steps.append((fraction, message)),
    )
    return output.image, output.metadata, steps


def subject_mask(size: tuple[int, int]) -> np.ndarray:
    expected = np.zeros((size[1], size[0]), dtype=bool)
    left, top, right, bottom = SUBJECT
    expected[top : bottom + 1, left : right + 1] = True
    return expected


def assert_matches_subject(alpha: np.ndarray) -> None:
    """Alpha is 255 on the subject and 0 on the background, except a few pixels of resampled edge."""
    expected = subject_mask((alpha.shape[1], alpha.shape[0]))
    inner = np.zeros_like(expected)
    left, top, right, bottom = SUBJECT
    inner[top + 4 : bottom - 3, left + 4 : right - 3] = True
    outer = ~expected
    outer[top - 4 : bottom + 5, left - 4 : right + 5] = False
    assert alpha[inner].min() >= 250 and alpha[outer].max() <= 5
    assert abs(int((alpha > 127).sum()) - int(expected.sum())) < 0.02 * expected.sum()


def test_model_list_is_what_rembg_offers_locally() -> None:
    from rembg.sessions import sessions

    for name in REMBG_MODELS:
        assert name in sessions, name
        assert sessions[name].is_local() and not sessions[name].requires_credentials()
    assert "u2net_cloth_seg" not in REMBG_MODELS  # three stacked masks, not one cut-out
    assert get_settings().background_model in REMBG_MODELS


def test_cutout_is_rgba_with_the_subject_opaque_and_the_rest_transparent(picture: Image.Image) -> None:
    result, metadata, _ = remove(picture, model="u2net")
    assert result.mode == "RGBA" and result.size == picture.size
    pixels = np.asarray(result)
    assert set(np.unique(pixels[..., 3])) >= {0, 255}
    assert_matches_subject(pixels[..., 3])
    assert (pixels[200, 250, :3] == (230, 200, 170)).all()  # the subject keeps its colour
    assert metadata["engine"] == "rembg" and metadata["model"] == "u2net"
    assert set(metadata["timings"]) == {"load", "infer", "compose"}
    assert 0.1 < metadata["foreground_fraction"] < 0.3


def test_progress_goes_load_infer_compose_in_order(picture: Image.Image) -> None:
    _, _, steps = remove(picture, model="u2net")
    messages = [message for _, message in steps]
    assert messages == [
        "Loading background model u2net",
        "Finding the subject (u2net)",
        "Composing the cut-out",
        "Background removed",
    ]
    fractions = [fraction for fraction, _ in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_default_model_comes_from_settings(picture: Image.Image) -> None:
    _, metadata, _ = remove(picture)
    assert metadata["model"] == get_settings().background_model == "u2net"


def test_bgcolor_fills_the_background(picture: Image.Image) -> None:
    result, _, _ = remove(picture, model="u2net", bgcolor=[0, 255, 0])  # alpha 255 when left out
    pixels = np.asarray(result)
    assert result.mode == "RGBA" and (pixels[..., 3] == 255).all()
    assert (pixels[10, 10] == (0, 255, 0, 255)).all()
    assert (pixels[200, 250] == (230, 200, 170, 255)).all()


def test_only_mask_returns_the_mask(picture: Image.Image) -> None:
    result, _, steps = remove(picture, model="u2net", only_mask=True)
    assert result.mode == "L" and result.size == picture.size
    assert_matches_subject(np.asarray(result))
    assert "Mask ready" in [message for _, message in steps]


def test_post_processed_mask_is_binary(picture: Image.Image) -> None:
    result, _, _ = remove(picture, model="u2net", only_mask=True, post_process_mask=True)
    mask = np.asarray(result)
    assert set(np.unique(mask)) == {0, 255}
    assert_matches_subject(mask)


def test_alpha_matting_keeps_the_subject(picture: Image.Image) -> None:
    result, _, steps = remove(picture.resize((250, 180)), model="u2net", alpha_matting=True)
    alpha = np.asarray(result)[..., 3]
    assert result.mode == "RGBA" and alpha[100, 125] > 240 and alpha[5, 5] < 15
    assert "Refining edges with alpha matting" in [message for _, message in steps]


def test_other_model_loads_from_rembgs_own_folder(picture: Image.Image) -> None:
    result, metadata, _ = remove(picture, model="isnet-general-use")
    assert metadata["model"] == "isnet-general-use"
    assert_matches_subject(np.asarray(result)[..., 3])


def test_one_session_per_model_per_process(picture: Image.Image) -> None:
    remove(picture, model="u2net")
    key = session_key("u2net", get_settings())
    session = load_once(key, lambda: pytest.fail("the session should be cached"))
    remove(picture, model="u2net")
    assert load_counts[key] == 1
    assert load_once(key, lambda: None) is session


def test_missing_weights_fail_fast_naming_the_file(picture: Image.Image) -> None:
    started = time.monotonic()
    with pytest.raises(ModelUnavailable) as caught:
        remove(picture, model="silueta")
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "silueta.onnx" in message and str(rembg_home(get_settings())) in message
    assert "python app.py download-models" in message
    assert load_counts[session_key("silueta", get_settings())] == 0


def test_empty_or_corrupt_weights_are_a_clear_failure(picture: Image.Image) -> None:
    """An empty file counts as missing; a garbled one says to download it again, not ONNX internals."""
    home = rembg_home(get_settings())
    (home / "u2netp.onnx").write_bytes(b"")
    (home / "silueta.onnx").write_bytes(b"<html>404 Not Found</html>")
    try:
        with pytest.raises(ModelUnavailable, match=r"u2netp.onnx is not at"):
            remove(picture, model="u2netp")
        with pytest.raises(ModelUnavailable, match=r"looks corrupt or incomplete: delete it and run"):
            remove(picture, model="silueta")
    finally:
        (home / "u2netp.onnx").unlink()
        (home / "silueta.onnx").unlink()


def test_require_model_accepts_both_layouts(tmp_path: Any) -> None:
    (tmp_path / "models" / "u2netp").mkdir(parents=True)
    (tmp_path / "models" / "u2netp" / "u2netp.onnx").write_bytes(b"x")
    (tmp_path / "silueta.onnx").write_bytes(b"x")
    assert require_model("u2netp", tmp_path) == tmp_path / "models" / "u2netp" / "u2netp.onnx"
    assert require_model("silueta", tmp_path) == tmp_path / "silueta.onnx"


def test_every_model_is_declared_with_its_file_source_and_licence() -> None:
    settings = get_settings()
    models = RembgEngine().models(settings)
    assert [model.name for model in models] == list(REMBG_MODELS)
    assert [model.name for model in models if model.default] == ["u2net"]
    u2net, birefnet = models[0], models[REMBG_MODELS.index("birefnet-general")]
    assert u2net.target(settings) == rembg_home(settings) / "models" / "u2net" / "u2net.onnx"  # rembg's layout
    assert u2net.location(settings) == rembg_home(settings) / "u2net.onnx"  # the flat one counts too
    assert u2net.source.url == "https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net.onnx"
    assert birefnet.source.file == "birefnet-general.onnx" and birefnet.license == "MIT"
    assert birefnet.size == 973_000_000 and birefnet.source.md5 == "7a35a0141cbbc80de11d9c9a28f52697"


def test_a_missing_model_downloads_on_first_use(
    picture: Image.Image, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the mirror (a loopback server), into rembg's layout, then the job runs on it."""
    import hashlib

    from pipelines.base import JobInput
    from tests.support.mirror import serving_mirror

    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "home"))  # loading points rembg there; restored after
    tiny = build_background_model(tmp_path / "u2netp.onnx").read_bytes()
    with serving_mirror() as mirror:
        mirror.put("rembg/u2netp.onnx", tiny)
        mirror.put("rembg/u2netp.onnx.sha256", hashlib.sha256(tiny).hexdigest().encode())  # not rembg's own file
        settings = get_settings().model_copy(update={"rembg_home": tmp_path / "home", "model_mirror": mirror.url})
        steps: list[tuple[float, str]] = []
        job = JobInput(
            images={"image": picture}, parameters=BackgroundRemovalParameters(model="u2netp"), settings=settings
        )
        output = OPERATION.run(job, lambda fraction, message, preview=None: steps.append((fraction, message)))
    assert (tmp_path / "home" / "models" / "u2netp" / "u2netp.onnx").read_bytes() == tiny
    assert any(message.startswith("Downloading u2netp.onnx") for _, message in steps)
    assert output.metadata["model"] == "u2netp" and steps[-1] == (1.0, "Background removed")
