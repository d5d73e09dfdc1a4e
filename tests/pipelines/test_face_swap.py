"""Face swap through insightface's real FaceAnalysis, model_zoo routing and INSwapper, on tiny models.

The tiny detector finds squares of FACE_RGB (tests/support/tiny_onnx.py), so the pictures here are
drawn; insightface's t1.jpg (six real faces) needs the real buffalo_l pack to be counted.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipelines.base import JobInput, ModelUnavailable, PipelineError
from pipelines.face_swap import (
    FaceSwapParameters,
    InsightFaceEngine,
    analysis_key,
    insightface_root,
    load_analysis,
    load_swapper,
    require_models,
    swap_faces,
    swap_one,
    swapper_key,
)
from pipelines.models import load_counts
from settings import get_settings
from tests.support.tiny_onnx import FACE_RGB, build_insightface_models, draw_faces

# (left, top, side), drawn out of left-to-right order; 0..3 from the left once sorted.
TARGET_FACES = [(336, 80, 128), (40, 64, 64), (528, 320, 80), (176, 240, 96)]
LEFT_TO_RIGHT = sorted(TARGET_FACES)
SMALL, BIG = (64, 64, 64), (320, 160, 128)
SMALL_COLOUR, BIG_COLOUR = (212, 166, 126), (236, 178, 140)


@pytest.fixture(scope="module", autouse=True)
def tiny_models() -> None:
    build_insightface_models(insightface_root(get_settings()))


@pytest.fixture(scope="module")
def target() -> Image.Image:
    return draw_faces((640, 480), TARGET_FACES)


def source_with(*faces: tuple[tuple[int, int, int], tuple[int, int, int]]) -> Image.Image:
    return draw_faces((640, 480), [box for box, _ in faces], colours=[colour for _, colour in faces])


@pytest.fixture(scope="module")
def source() -> Image.Image:
    return source_with((SMALL, SMALL_COLOUR), (BIG, BIG_COLOUR))


def swap(source: Image.Image, target: Image.Image, **params: Any) -> tuple[Image.Image, dict[str, Any], list[str]]:
    messages: list[str] = []
    output = swap_faces(
        JobInput(
            images={"image": source, "target_image": target},
            parameters=FaceSwapParameters(**params),
            settings=get_settings(),
        ),
        lambda fraction, message, preview=None: messages.append(message),
    )
    return output.image, output.metadata, messages


def changed(before: Image.Image, after: Image.Image) -> np.ndarray:
    return np.abs(np.asarray(before, dtype=int) - np.asarray(after, dtype=int)).sum(axis=2) > 0


def region(box: tuple[int, int, int], margin: float = 0.0) -> tuple[slice, slice]:
    left, top, side = box
    grow = int(side * margin)
    return slice(max(top - grow, 0), top + side + grow), slice(max(left - grow, 0), left + side + grow)


def centre(box: tuple[int, int, int]) -> tuple[slice, slice]:
    left, top, side = box
    return slice(top + side // 4, top + 3 * side // 4), slice(left + side // 4, left + 3 * side // 4)


def test_tiny_files_load_through_insightface_routing() -> None:
    analysis = load_analysis(get_settings())
    assert {task: type(model).__name__ for task, model in analysis.models.items()} == {
        "detection": "SCRFD",
        "recognition": "ArcFaceONNX",
    }
    assert type(load_swapper(get_settings())).__name__ == "INSwapper"


def test_finds_every_face_ordered_left_to_right(source: Image.Image, target: Image.Image) -> None:
    result, metadata, _ = swap(source, target, face_index=0)
    assert result.size == target.size and result.mode == "RGB"
    assert metadata["faces_found"] == 4
    assert metadata["target_faces"] == [[left, top, left + side, top + side] for left, top, side in LEFT_TO_RIGHT]
    assert metadata["source_face"] == [BIG[0], BIG[1], BIG[0] + BIG[2], BIG[1] + BIG[2]]  # the largest
    assert metadata["engine"] == "insightface" and set(metadata["timings"]) == {"load", "detect", "swap"}


def test_face_index_changes_only_that_face(source: Image.Image, target: Image.Image) -> None:
    result, metadata, messages = swap(source, target, face_index=2)
    diff = changed(target, result)
    chosen = LEFT_TO_RIGHT[2]
    assert diff[centre(chosen)].all()
    outside = np.ones_like(diff)
    outside[region(chosen, margin=0.25)] = False
    assert not diff[outside].any()
    assert metadata["faces_swapped"] == 1 and metadata["face_index"] == 2
    assert messages.count("Swapping face 1/1") == 1


def test_all_faces_are_replaced_when_no_index_is_given(source: Image.Image, target: Image.Image) -> None:
    result, metadata, messages = swap(source, target)
    diff = changed(target, result)
    for face in TARGET_FACES:
        assert diff[centre(face)].all(), face
    inside_any = np.zeros_like(diff)
    for face in TARGET_FACES:
        inside_any[region(face, margin=0.25)] = True
    assert not diff[~inside_any].any()
    assert metadata["faces_swapped"] == 4
    assert [m for m in messages if m.startswith("Swapping")] == [f"Swapping face {n}/4" for n in range(1, 5)]
    assert messages[-1] == "Swapped 4 faces"


def test_the_largest_source_face_is_the_one_used(source: Image.Image, target: Image.Image) -> None:
    both, _, _ = swap(source, target, face_index=1)
    big_only, _, _ = swap(source_with((BIG, BIG_COLOUR)), target, face_index=1)
    small_only, _, _ = swap(source_with((SMALL, SMALL_COLOUR)), target, face_index=1)
    assert np.array_equal(np.asarray(both), np.asarray(big_only))
    face = centre(LEFT_TO_RIGHT[1])
    assert np.abs(np.asarray(both, dtype=int)[face] - np.asarray(small_only, dtype=int)[face]).mean() > 3


def test_face_index_past_the_last_face_says_how_many(source: Image.Image, target: Image.Image) -> None:
    with pytest.raises(PipelineError, match=r"^face_index 7 but the target image has 4 faces \(0-3\)$"):
        swap(source, target, face_index=7)
    one_face = draw_faces((640, 480), [(200, 200, 96)])
    with pytest.raises(PipelineError, match=r"^face_index 1 but the target image has 1 face \(0\)$"):
        swap(source, one_face, face_index=1)


def test_no_face_in_either_image_is_a_clear_failure(source: Image.Image, target: Image.Image) -> None:
    empty = Image.new("RGB", (640, 480), (40, 60, 90))
    with pytest.raises(PipelineError, match=r"^No face found in the source image$"):
        swap(empty, target)
    with pytest.raises(PipelineError, match=r"^No face found in the target image$"):
        swap(source, empty)
    almost = draw_faces((640, 480), [(200, 200, 96)], colours=[(FACE_RGB[0], FACE_RGB[1] + 60, FACE_RGB[2])])
    with pytest.raises(PipelineError, match="target image"):  # not skin-coloured for the tiny detector
        swap(source, almost)


def test_transparency_of_the_target_is_kept(source: Image.Image, target: Image.Image) -> None:
    rgba = target.convert("RGBA")
    rgba.putalpha(200)
    result, _, _ = swap(source, rgba, face_index=0)
    assert result.mode == "RGBA" and np.asarray(result)[..., 3].min() == 200


def test_models_load_once_per_process(source: Image.Image, target: Image.Image) -> None:
    swap(source, target, face_index=0)
    swap(source, target, face_index=1)
    settings = get_settings()
    assert load_counts[analysis_key(settings)] == 1 and load_counts[swapper_key(settings)] == 1


def test_missing_files_fail_fast_naming_each(tmp_path: Any) -> None:
    started = time.monotonic()
    with pytest.raises(ModelUnavailable) as caught:
        require_models(tmp_path, "buffalo_l", "inswapper_128.onnx")
    assert time.monotonic() - started < 1
    message = str(caught.value)
    for name in ("det_10g.onnx", "w600k_r50.onnx", "inswapper_128.onnx", "python app.py download-models"):
        assert name in message
    assert str(tmp_path / "inswapper_128.onnx") in message and "huggingface.co" in message

    (tmp_path / "models" / "buffalo_l").mkdir(parents=True)
    for name in ("det_10g.onnx", "w600k_r50.onnx"):
        (tmp_path / "models" / "buffalo_l" / name).write_bytes(b"onnx")
    with pytest.raises(ModelUnavailable) as caught:
        require_models(tmp_path, "buffalo_l", "inswapper_128.onnx")
    assert "inswapper_128.onnx" in str(caught.value) and "det_10g" not in str(caught.value)
    assert "download-models" not in str(caught.value)  # only the hand-fetched file is missing


def test_models_are_the_pack_and_the_swapper_which_has_no_public_source() -> None:
    settings = get_settings()
    pack, swapper = InsightFaceEngine().models(settings)
    root = insightface_root(settings)
    assert (pack.name, pack.location(settings)) == ("buffalo_l", root / "models" / "buffalo_l")
    assert pack.download_kind(settings) == "auto"
    assert pack.source.url == "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"
    assert (swapper.name, swapper.location(settings)) == ("inswapper_128", root / "inswapper_128.onnx")
    assert swapper.download_kind(settings.model_copy(update={"model_mirror": None})) == "manual"
    assert swapper.download_kind(settings) == "auto"  # a mirror may serve it
    elsewhere = settings.model_copy(update={"face_swap_model": "not-here.onnx", "model_mirror": None})
    with pytest.raises(PipelineError, match=r"not-here.onnx has no public download; get it from .*Put it at"):
        InsightFaceEngine().models(elsewhere)[1].fetch(elsewhere, lambda transfer: None)


def test_swapping_in_the_face_neighbourhood_matches_insightfaces_full_frame_paste(
    source: Image.Image, target: Image.Image
) -> None:
    analysis, swapper = load_analysis(get_settings()), load_swapper(get_settings())
    bgr = np.ascontiguousarray(np.asarray(target)[:, :, ::-1])
    face = min(analysis.get(bgr), key=lambda found: float(found.bbox[0]))
    donor = analysis.get(np.ascontiguousarray(np.asarray(source)[:, :, ::-1]))[0]
    full = swapper.get(bgr.copy(), face, donor, paste_back=True)
    local = bgr.copy()
    swap_one(swapper, local, face, donor)
    assert np.abs(full.astype(int) - local.astype(int)).max() <= 2
    assert (full != bgr).any()
