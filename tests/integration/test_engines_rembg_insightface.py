"""rembg and insightface jobs through the REST API, Redis and the real worker processes.

The tiny models are built into ATELIER_MODELS_DIR, which the session's workers share; they load
them lazily at the first job, through the same code as real weights.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines.background_removal import rembg_home
from pipelines.face_swap import insightface_root
from settings import get_settings
from tests.conftest import b64
from tests.integration.conftest import Api
from tests.support.tiny_onnx import build_insightface_models, build_rembg_models, draw_faces


@pytest.fixture(scope="module", autouse=True)
def tiny_models() -> None:
    build_rembg_models(rembg_home(get_settings()), ("u2net",))
    build_insightface_models(insightface_root(get_settings()))


def result_png(api: Api, task_id: str) -> Image.Image:
    response = api.http.get(f"/api/v1/tasks/{task_id}/result/?format=png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def test_background_removal_job_returns_an_rgba_cutout(api: Api) -> None:
    picture = Image.new("RGB", (320, 240), (20, 30, 40))
    ImageDraw.Draw(picture).ellipse((80, 60, 240, 180), fill=(240, 220, 200))
    task_id = api.submit({"task_type": "background_removal", "image": b64(picture), "parameters": {"model": "u2net"}})
    final = api.wait(task_id, timeout=120)
    assert final["status"] == "SUCCESS", final
    result = result_png(api, task_id)
    assert result.mode == "RGBA" and result.size == picture.size
    alpha = np.asarray(result)[..., 3]
    assert alpha[120, 160] == 255 and alpha[5, 5] == 0  # the bright ellipse is the subject
    metadata = api.http.get(f"/api/v1/tasks/{task_id}/result/").json()["result"]["metadata"]
    assert metadata["engine"] == "rembg" and metadata["model"] == "u2net"


def test_background_removal_with_an_undownloaded_model_fails_with_the_file_name(api: Api) -> None:
    picture = Image.new("RGB", (64, 64), (200, 200, 200))
    task_id = api.submit({"task_type": "background_removal", "image": b64(picture), "parameters": {"model": "u2netp"}})
    final = api.wait(task_id, timeout=60)
    assert final["status"] == "FAILURE" and "u2netp.onnx" in final["message"]
    assert "download-models" in final["message"]


def test_face_swap_job_replaces_the_chosen_face(api: Api) -> None:
    source = draw_faces((640, 480), [(256, 160, 128)])
    target = draw_faces((640, 480), [(40, 64, 64), (336, 80, 128), (176, 240, 96)])
    task_id = api.submit(
        {"task_type": "face_swap", "image": b64(source), "target_image": b64(target), "parameters": {"face_index": 1}}
    )
    final = api.wait(task_id, timeout=120)
    assert final["status"] == "SUCCESS", final
    result = result_png(api, task_id)
    assert result.size == target.size
    diff = np.abs(np.asarray(result.convert("RGB"), dtype=int) - np.asarray(target, dtype=int)).sum(axis=2)
    assert diff[270:300, 200:250].min() > 0  # face 1 from the left (176, 240, 96) changed
    assert diff[:, :150].max() == 0 and diff[:, 320:].max() == 0  # faces 0 and 2 did not
    metadata = api.http.get(f"/api/v1/tasks/{task_id}/result/").json()["result"]["metadata"]
    assert metadata["engine"] == "insightface" and metadata["faces_found"] == 3 and metadata["faces_swapped"] == 1


def test_face_swap_with_an_index_past_the_faces_fails_clearly(api: Api) -> None:
    face = draw_faces((640, 480), [(256, 160, 128)])
    task_id = api.submit(
        {"task_type": "face_swap", "image": b64(face), "target_image": b64(face), "parameters": {"face_index": 7}}
    )
    final = api.wait(task_id, timeout=120)
    assert final["status"] == "FAILURE"
    assert final["message"] == "face_index 7 but the target image has 1 face (0)"
