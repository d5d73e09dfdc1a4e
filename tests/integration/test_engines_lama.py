"""LaMa through the REST API, Redis and a real prefork worker.

The session's workers share ATELIER_MODELS_DIR, where no big-lama.pt exists: there ``telea`` stays
the default for every other test, whatever the order. A LaMa job runs on a worker of its own whose
ATELIER_MODELS_DIR holds the tiny LaMa; while it runs, the session's cpu worker stops consuming the
cpu queue (Celery's cancel_consumer, restored afterwards), so the job cannot land on a worker
without the weights. Nothing is mocked: same queue, same routing, same task.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipelines.object_removal import mask_array
from tests.conftest import b64
from tests.integration.conftest import Api
from tests.support.stack import Worker
from tests.support.tiny_lama import build_tiny_lama

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


def set_consuming(worker: Worker, consume: bool) -> None:
    from tasks import app

    command = app.control.add_consumer if consume else app.control.cancel_consumer
    replies = command("cpu", destination=[worker.hostname], reply=True, timeout=10)
    assert replies and worker.hostname in replies[0], f"{worker.hostname} did not answer: {replies}"


@pytest.fixture
def lama_worker(
    workers: dict[str, Worker], redis_client: Any, tmp_path_factory: pytest.TempPathFactory, artifacts: Path
) -> Iterator[Worker]:
    """The only cpu worker while the test runs, with the tiny LaMa in its models folder."""
    models = tmp_path_factory.mktemp("lama-models")
    build_tiny_lama(models / "lama" / "big-lama.pt")
    set_consuming(workers["cpu"], False)
    worker = Worker("cpu", "lama-cpu", env={"ATELIER_MODELS_DIR": str(models)}, log=artifacts / "worker-lama.log")
    try:
        yield worker.wait_ready(redis_client)
    finally:
        worker.stop()
        set_consuming(workers["cpu"], True)


def result_of(api: Api, task_id: str) -> tuple[dict[str, Any], Image.Image]:
    body = api.http.get(f"/api/v1/tasks/{task_id}/result/").json()["result"]
    return body["metadata"], Image.open(io.BytesIO(base64.b64decode(body["image_data"])))


def test_lama_job_succeeds_on_a_real_worker(
    api: Api, lama_worker: Worker, photo: Image.Image, mask: Image.Image
) -> None:
    explicit = api.submit(
        {"task_type": "object_removal", "image": b64(photo), "mask": b64(mask), "parameters": {"engine": "lama"}}
    )
    trace = api.trace(explicit, timeout=90)  # the worker's first LaMa job imports torch
    assert trace[-1]["status"] == "SUCCESS", trace[-1]
    metadata, out = result_of(api, explicit)
    assert metadata["engine"] == "lama" and metadata["crop"] == [0, 0, 600, 400]
    assert metadata["model_loads_in_process"] == 1 and set(metadata["timings"]) == {"load", "run"}
    assert out.size == photo.size
    outside = ~mask_array(mask)
    assert np.array_equal(np.asarray(out.convert("RGB"))[outside], np.asarray(photo)[outside])
    assert not np.array_equal(np.asarray(out.convert("RGB"))[~outside], np.asarray(photo)[~outside])

    # No engine given: this worker has the weights, so lama is the default; the model is not reloaded.
    default = api.submit({"task_type": "object_removal", "image": b64(photo), "mask": b64(mask)})
    assert api.wait(default, timeout=60)["status"] == "SUCCESS"
    metadata, _ = result_of(api, default)
    assert metadata["engine"] == "lama" and metadata["model_loads_in_process"] == 1


def test_lama_without_weights_fails_fast_and_readably(api: Api, photo: Image.Image, mask: Image.Image) -> None:
    """The session's cpu worker has no big-lama.pt: asking for lama is a FAILURE that says what to do."""
    task_id = api.submit(
        {"task_type": "object_removal", "image": b64(photo), "mask": b64(mask), "parameters": {"engine": "lama"}}
    )
    status = api.wait(task_id, timeout=30)
    assert status["status"] == "FAILURE"
    assert "big-lama.pt" in status["message"] and "download-models" in status["message"]
    assert "Traceback" not in status["message"]
