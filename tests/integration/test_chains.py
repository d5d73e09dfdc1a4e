"""Chains through REST, Redis and the real workers: one submission, several operations, one task id."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines.background_removal import rembg_home
from pipelines.face_swap import insightface_root
from settings import get_settings
from tasks.store import CHAINS, chain_key, job_key, output_key
from tests.conftest import b64
from tests.integration.conftest import FINISHED, Api
from tests.integration.test_batches import batch_status, wait_batch
from tests.integration.test_jobs import SMALL
from tests.support.operations import executions_key
from tests.support.stack import job_ids, settle, wait_until
from tests.support.tiny_diffusion import build_tiny_pipeline
from tests.support.tiny_onnx import build_insightface_models, build_rembg_models, draw_faces


@pytest.fixture(scope="module")
def tiny_models() -> None:
    build_tiny_pipeline(Path(os.environ["ATELIER_GENERATION_MODEL"]))
    build_rembg_models(rembg_home(get_settings()), ("u2net",))
    build_insightface_models(insightface_root(get_settings()))


def steps(marker: str, count: int = 3, delay: float = 0.05, **overrides: Any) -> dict[str, Any]:
    """A chain of ``count`` test_steps jobs, each counting its runs under ``<marker>-<k>``."""
    then = [
        {"task_type": "test_steps", "parameters": {"steps": 4, "delay": delay}, "prompt": f"{marker}-{index}"}
        for index in range(2, count + 1)
    ]
    for index, extra in overrides.items():
        then[int(index.removeprefix("step")) - 2]["parameters"] |= extra
    first = {"task_type": "test_steps", "parameters": {"steps": 4, "delay": delay}, "prompt": f"{marker}-1"}
    return {**first, "image": b64(SMALL), "then": then}


def png_of(api: Api, task_id: str) -> Image.Image:
    response = api.http.get(f"/api/v1/tasks/{task_id}/result/?format=png")
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def test_generation_then_background_removal_then_style_transfer(api: Api, tiny_models: None, redis_client: Any) -> None:
    body = {
        "task_type": "image_generation",
        "prompt": "a red shoe on a table",
        "parameters": {"width": 64, "height": 64, "steps": 2, "seed": 3},
        "then": [
            {"task_type": "background_removal", "parameters": {"model": "u2net"}},
            {"task_type": "style_transfer", "parameters": {"style": "mosaic", "engine": "fast"}},
        ],
    }
    response = api.http.post("/api/v1/tasks/submit/", json=body)
    assert response.status_code == 202, response.text
    chain_id = response.json()["task_id"]
    assert (
        response.json()["message"]
        == "image_generation → background_removal → style_transfer chain submitted successfully"
    )
    trace = api.trace(chain_id, timeout=240)
    final = trace[-1]
    assert final["status"] == "SUCCESS" and final["progress"] == 100 and final["step"] == 3, final
    assert [step["task_type"] for step in final["steps"]] == [
        "image_generation",
        "background_removal",
        "style_transfer",
    ]
    assert all(step["status"] == "SUCCESS" for step in final["steps"])
    # Each message names its step and operation, in order. A step that ends within 50 ms publishes no
    # PROCESSING state at all (the tiny background removal can), so not every step need be seen.
    titles = {1: "Generate", 2: "Remove background", 3: "Style transfer"}
    shown = [status for status in trace if status["status"] in ("PENDING", "PROCESSING")]
    assert shown and all(
        status["message"].startswith(f"Step {status['step']} of 3 · {titles[status['step']]} — ") for status in shown
    ), [status["message"] for status in shown]
    steps = [status["step"] for status in trace]
    assert steps == sorted(steps) and steps[0] == 1
    progress = [status["progress"] for status in trace]
    assert progress == sorted(progress)  # over the whole chain, never backwards
    queues = [redis_client.hget(job_key(step["task_id"]), "queue") for step in final["steps"]]
    assert queues == [b"gpu", b"cpu", b"gpu"]  # each step on its own operation's queue

    result = png_of(api, chain_id)
    assert result.size == (64, 64)
    history = json.loads(result.text["atelier:chain"])  # type: ignore[attr-defined]
    assert [step["operation"] for step in history] == ["image_generation", "background_removal", "style_transfer"]
    assert history[0]["prompt"] == "a red shoe on a table" and history[0]["parameters"]["seed"] == 3
    generated = png_of(api, final["steps"][0]["task_id"])  # each step's own result stays readable
    cutout = png_of(api, final["steps"][1]["task_id"])
    assert generated.size == cutout.size == (64, 64) and cutout.mode == "RGBA"
    assert (
        api.http.get(f"/api/v1/tasks/{chain_id}/result/").json()["result"]["metadata"]["operation"] == "style_transfer"
    )


def test_object_removal_then_a_face_swapped_into_the_result(api: Api, tiny_models: None) -> None:
    target = draw_faces((320, 240), [(100, 60, 96)])
    ImageDraw.Draw(target).rectangle((260, 180, 300, 220), fill=(250, 250, 0))  # the thing to remove
    mask = Image.new("L", target.size, 0)
    ImageDraw.Draw(mask).rectangle((255, 175, 305, 225), fill=255)
    source = draw_faces((320, 240), [(120, 60, 96)], colours=[(236, 178, 140)])
    body = {
        "task_type": "object_removal",
        "image": b64(target),
        "mask": b64(mask),
        "then": [{"task_type": "face_swap", "input": "target_image", "image": b64(source)}],
    }
    response = api.http.post("/api/v1/tasks/submit/", json=body)
    assert response.status_code == 202, response.text
    final = api.wait(response.json()["task_id"], timeout=240)
    assert final["status"] == "SUCCESS", final
    result = np.asarray(png_of(api, final["task_id"]).convert("RGB"), dtype=int)
    assert result.shape == (240, 320, 3)
    assert result[190:210, 270:290, 2].mean() > 40  # the yellow square is gone (yellow has no blue)
    removed = np.asarray(png_of(api, final["steps"][0]["task_id"]).convert("RGB"), dtype=int)
    assert np.abs(result - removed)[40:170, 40:170].sum() > 0  # and the face was swapped after


def test_a_chain_is_validated_whole_and_nothing_is_enqueued(api: Api, redis_client: Any) -> None:
    settle(redis_client)
    before = job_ids(redis_client)
    photo = Image.new("RGB", (64, 48), (90, 90, 90))
    small_mask = Image.new("L", (32, 32), 255)
    base = {"task_type": "background_removal", "image": b64(photo)}
    cases = [
        (
            [
                {"task_type": "style_transfer", "parameters": {"style": "mosaic"}},
                {"task_type": "background_removal", "parameters": {"model": "no-such-model"}},
            ],
            {"then[1].parameters.model"},
        ),
        ([{"task_type": "image_generation", "prompt": "a cat"}], {"then[0].task_type"}),
        ([{"task_type": "object_removal", "mask": b64(small_mask)}], {"then[0].mask"}),  # not the photo's size
        ([{"task_type": "face_swap", "input": "mask"}], {"then[0].input"}),
        ([{"task_type": "style_transfer", "image": b64(photo), "parameters": {"style": "mosaic"}}], {"then[0].image"}),
        ([{"task_type": "style_transfer"}] * 6, {"then"}),
        ("not a list", {"then"}),
        ([{"task_type": "style_transfer", "parameters": {"style": "mosaic"}, "colour": 1}], {"then[0].colour"}),
    ]
    for then, expected in cases:
        response = api.http.post("/api/v1/tasks/submit/", json={**base, "then": then})
        assert response.status_code == 400, response.text
        assert set(response.json()["details"]) == expected, (then, response.json())
    both = api.http.post(
        "/api/v1/tasks/submit/", json={"task_type": "background_removal", "then": [{"task_type": "x"}]}
    )
    assert set(both.json()["details"]) == {"image", "then[0].task_type"}  # the first job's and the steps' problems
    assert job_ids(redis_client) == before


def test_cancel_in_the_middle_step_drops_the_rest(api: Api, redis_client: Any) -> None:
    chain_id = api.submit(steps("chain-cancel", count=3, delay=0.1, step2={"steps": 100}))  # step 2: 10 s
    wait_until(lambda: api.status(chain_id).get("step") == 2 and api.status(chain_id)["status"] == "PROCESSING", 60,
               what="step 2 to run")  # fmt: skip
    response = api.cancel(chain_id)
    assert response.status_code == 200 and response.json()["status"] == "REVOKED"
    final = api.wait(chain_id, timeout=30)
    assert final["status"] == "REVOKED" and final["message"] == "Cancelled at step 2 of 3"
    assert [step["status"] for step in final["steps"]] == ["SUCCESS", "REVOKED", "REVOKED"]
    time.sleep(1.5)  # nothing more runs
    assert redis_client.get(executions_key("chain-cancel-3")) is None
    assert api.cancel(chain_id).status_code == 200  # cancelled already: the same answer
    assert api.http.get(f"/api/v1/tasks/{chain_id}/result/").status_code == 409


def test_a_failed_step_fails_the_chain_naming_the_step(api: Api, redis_client: Any) -> None:
    chain_id = api.submit(steps("chain-fails", count=3, step2={"fail": True}))
    final = api.wait(chain_id, timeout=60)
    assert final["status"] == "FAILURE" and final["message"] == "Step 2 of 3 · Test steps failed: Asked to fail"
    last = final["steps"][2]["task_id"]
    ended = api.wait(last, timeout=30)  # the step after it never runs: the reconciler ends it
    assert ended["status"] == "REVOKED" and redis_client.get(executions_key("chain-fails-3")) is None
    assert api.cancel(chain_id).status_code == 409


def test_a_step_waits_with_its_own_id_and_a_chain_follows_on_every_route(api: Api) -> None:
    chain_id = api.submit(steps("chain-routes", count=2, delay=0.3))  # step 1: 1.2 s, still running below
    second = api.status(chain_id)["steps"][1]["task_id"]
    waiting = api.status(second)
    assert waiting["status"] == "PENDING" and waiting["message"] == "Waiting for step 1 of 2 to finish"
    changed = api.http.get(f"/api/v1/tasks/{chain_id}/status/?wait=10").json()
    assert changed["task_id"] == chain_id
    assert api.wait(chain_id)["status"] == "SUCCESS"
    assert api.status(second)["status"] == "SUCCESS"


def test_a_chain_whose_worker_died_between_two_steps_goes_on(api: Api, redis_client: Any) -> None:
    """Step 1 succeeded and stored its output, and its worker died before sending step 2: the
    reconciler sends it (once) a few seconds later."""
    from jobs import get_client
    from jobs.chains import plan, validated, write_plan

    client = get_client()
    first, then = validated(steps("chain-stalled", count=2), {}, 10_000_000)
    chain_id, planned = plan(first, then, client.settings)
    pipe = redis_client.pipeline(transaction=True)
    write_plan(pipe, client.store, (chain_id, planned), None, None)
    pipe.execute()
    step1 = planned[0].job_id
    client.store.dequeue(step1, "cpu")  # as if it ran: an outcome, an output, a time it ended
    redis_client.set(output_key(step1), client.store.redis.get(f"atelier:job:{step1}:input:image"), ex=600)
    redis_client.hset(job_key(step1), mapping={"outcome": "SUCCESS", "finished": time.time() - 60})
    client.celery.backend.mark_as_done(step1, {"image_key": output_key(step1)})
    final = api.wait(chain_id, timeout=60)
    assert final["status"] == "SUCCESS"
    assert redis_client.get(executions_key("chain-stalled-2")) == b"1"
    assert redis_client.zscore(CHAINS, chain_id) is None or api.wait(chain_id)["status"] in FINISHED


def test_a_batch_of_chains(api: Api, redis_client: Any) -> None:
    body = {
        "task_type": "test_steps",
        "parameters": {"steps": 1, "delay": 0},
        "then": [{"task_type": "test_steps", "parameters": {"steps": 1, "delay": 0}}],
        "items": [{"image": b64(SMALL), "name": f"chained-{index}.png"} for index in range(5)],
    }
    response = api.http.post("/api/v1/batches/", json=body)
    assert response.status_code == 202, response.text
    batch_id = response.json()["batch_id"]
    final = wait_batch(api, batch_id)
    assert final["status"] == "SUCCESS" and final["counts"]["SUCCESS"] == 5
    one = api.status(final["items"][0]["task_id"])
    assert len(one["steps"]) == 2 and one["status"] == "SUCCESS"  # each item is a chain
    assert redis_client.exists(chain_key(one["task_id"]))
    assert batch_status(api, batch_id)["items"][0]["message"] == "Done"
    bad = api.http.post("/api/v1/batches/", json={**body, "then": [{"task_type": "nope"}]})
    assert bad.status_code == 400 and "then[0].task_type" in bad.json()["details"]
