"""Image generation end to end: REST → Redis → the session's real gpu worker → the tiny diffusers model."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tasks.store import RUNNING
from tests.integration.conftest import Api
from tests.support.stack import wait_until
from tests.support.tiny_diffusion import build_tiny_pipeline


@pytest.fixture(scope="module", autouse=True)
def tiny_sd() -> Path:
    # The session workers inherit ATELIER_GENERATION_MODEL and load it lazily, at their first job.
    return build_tiny_pipeline(Path(os.environ["ATELIER_GENERATION_MODEL"]))


def generation(prompt: str = "a red bicycle", **parameters: Any) -> dict[str, Any]:
    return {"task_type": "image_generation", "prompt": prompt, "parameters": {"width": 64, "height": 64, **parameters}}


def result_png(api: Api, task_id: str) -> Image.Image:
    response = api.http.get(f"/api/v1/tasks/{task_id}/result/")
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(base64.b64decode(response.json()["result"]["image_data"])))
    image.load()
    return image


def test_generation_through_rest_with_provenance(api: Api, tiny_sd: Path) -> None:
    task_id = api.submit(generation(width=96, height=64, steps=2, seed=7))
    assert api.wait(task_id, timeout=120)["status"] == "SUCCESS"
    image = result_png(api, task_id)
    assert image.size == (96, 64)
    text = image.text  # type: ignore[attr-defined]
    assert text["atelier:operation"] == "image_generation"
    assert text["atelier:engine"] == "diffusers"
    assert text["atelier:model"] == str(tiny_sd)
    assert text["atelier:seed"] == "7"
    assert text["atelier:prompt"] == "a red bicycle"
    assert json.loads(text["atelier:parameters"])["steps"] == 2
    result = api.http.get(f"/api/v1/tasks/{task_id}/result/").json()["result"]
    assert result["metadata"]["seed"] == 7 and result["prompt_used"] == "a red bicycle"

    # Same seed through the queue again: the same pixels; and the model stayed loaded.
    again = api.submit(generation(width=96, height=64, steps=2, seed=7))
    assert api.wait(again, timeout=60)["status"] == "SUCCESS"
    assert result_png(api, again).tobytes() == image.tobytes()
    meta = api.http.get(f"/api/v1/tasks/{again}/result/").json()["result"]["metadata"]
    assert meta["model_loads_in_process"] == 1 and meta["timings"]["load"] < 1


def test_grid_reports_each_seed(api: Api) -> None:
    task_id = api.submit(generation(steps=1, seed=100, num_images=3))
    assert api.wait(task_id, timeout=60)["status"] == "SUCCESS"
    image = result_png(api, task_id)
    assert image.size == (192, 64)
    assert json.loads(image.text["atelier:seeds"]) == [100, 101, 102]  # type: ignore[attr-defined]


def test_progress_steps_and_previews_in_status(api: Api) -> None:
    task_id = api.submit(generation(width=256, height=256, steps=30, seed=1))
    seen = api.trace(task_id, timeout=120)
    assert seen[-1]["status"] == "SUCCESS"
    running = [status for status in seen if status["status"] == "PROCESSING"]
    progress = [status["progress"] for status in running]
    assert progress == sorted(progress)
    steps = [status["message"] for status in running if "— step" in status["message"]]
    assert steps and all(message.startswith("Generating image — step ") for message in steps)
    numbers = [int(message.split("step ")[1].split("/")[0]) for message in steps]
    assert numbers == sorted(numbers) and all(message.endswith("/30") for message in steps)
    previews = [status["preview"] for status in running if status.get("preview")]
    assert previews, "no step preview was published while the job ran"
    preview = Image.open(io.BytesIO(base64.b64decode(previews[-1])))
    assert preview.size == (32, 32)  # the latents' size: 256 / 8


def test_cancel_mid_run_stops_within_a_step(api: Api, redis_client: Any) -> None:
    # 150 steps at 1024² take the tiny model a minute or more on two cores: a cancel lands mid-run.
    task_id = api.submit(generation(width=1024, height=1024, steps=150, seed=3))
    wait_until(lambda: "/150" in api.status(task_id)["message"] or None, 120, 0.02, what="the first step")
    assert api.cancel(task_id).json()["status"] == "REVOKED"
    # The worker lets JobCancelled out of the diffusers call at its next step and drops the job.
    wait_until(lambda: redis_client.zscore(RUNNING, task_id) is None, 30, what="the worker to stop the job")
    follower = api.submit(generation(steps=1, seed=4))
    assert api.wait(follower, timeout=60)["status"] == "SUCCESS"
    status = api.status(task_id)
    assert status["status"] == "REVOKED"
    assert api.http.get(f"/api/v1/tasks/{task_id}/result/").status_code == 409


def test_diffusion_style_runs_on_the_same_worker_model(api: Api, photo: Image.Image) -> None:
    from tests.conftest import b64

    task_id = api.submit(
        {
            "task_type": "style_transfer",
            "image": b64(photo.resize((96, 64))),
            "parameters": {"style": "starry-night", "engine": "diffusion", "strength": 0.5},
        }
    )
    assert api.wait(task_id, timeout=60)["status"] == "SUCCESS"
    result = api.http.get(f"/api/v1/tasks/{task_id}/result/").json()["result"]
    assert result["metadata"]["engine"] == "diffusion"
    assert result["metadata"]["model_loads_in_process"] == 1  # the gpu worker's generation model, reused
    assert result["prompt_used"] == "starry night style artwork"
    assert result_png(api, task_id).size == (96, 64)


def test_a_generated_png_carries_a1111_parameters_that_png_info_reads_back(api: Api, tiny_sd: Path) -> None:
    body = generation("a red bicycle, studio light", width=96, height=64, steps=2, seed=7, negative_prompt="blurry")
    task_id = api.submit(body)
    assert api.wait(task_id, timeout=120)["status"] == "SUCCESS"
    png = api.http.get(f"/api/v1/tasks/{task_id}/result/?format=png").content
    text = Image.open(io.BytesIO(png)).text  # type: ignore[attr-defined]
    assert text["parameters"] == (
        "a red bicycle, studio light\nNegative prompt: blurry\n"
        f"Steps: 2, Sampler: Euler, CFG scale: 0, Seed: 7, Size: 96x64, Model: {tiny_sd.name}"
    )
    info = api.http.post("/api/v1/png-info/", json={"image": base64.b64encode(png).decode()})
    assert info.status_code == 200, info.text
    assert info.json()["source"] == "atelier" and info.json()["prompt"] == "a red bicycle, studio light"
    assert info.json()["negative_prompt"] == "blurry"
    assert {"steps": 2, "seed": 7, "width": 96, "height": 64}.items() <= info.json()["parameters"].items()
    # The same PNG without Atelier's own chunks reads as A1111's, with the same facts.
    bare = Image.open(io.BytesIO(png))
    plain = io.BytesIO()
    from PIL import PngImagePlugin

    only_a1111 = PngImagePlugin.PngInfo()
    only_a1111.add_text("parameters", text["parameters"])
    bare.save(plain, "PNG", pnginfo=only_a1111)
    info = api.http.post("/api/v1/png-info/", files={"image": ("a1111.png", plain.getvalue(), "image/png")}).json()
    assert info["source"] == "a1111" and info["prompt"] == "a red bicycle, studio light"
    assert info["parameters"] == {
        "steps": 2, "sampler": "Euler", "guidance_scale": 0, "seed": 7, "width": 96, "height": 64, "model": tiny_sd.name
    }  # fmt: skip
    assert api.http.post("/api/v1/png-info/", json={"image": "%%"}).status_code == 400
    assert api.http.post("/api/v1/png-info/", json={}).status_code == 400
