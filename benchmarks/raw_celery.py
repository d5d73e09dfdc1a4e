"""The baseline for the job system: a plain Celery task, as a project without Atelier would write it.

The image and mask travel base64 in the message, the task decodes them with Pillow, inpaints with
OpenCV's Telea (the same call as Atelier's ``telea`` engine), encodes a PNG with Pillow and returns
it base64 in the result; the client calls ``.delay(...).get()``. Redis is broker and backend, the
worker is a prefork pool of one process — the shape of Atelier's own worker, none of its code:
no job record, no claims, no progress, no provenance, no priorities.

    RAW_CELERY_REDIS=redis://127.0.0.1:6379/0 celery -A benchmarks.raw_celery worker -Q raw -c 1 --pool prefork
"""

from __future__ import annotations

import base64
import io
import os

import cv2
import numpy as np
from celery import Celery
from PIL import Image

REDIS_URL = os.environ.get("RAW_CELERY_REDIS", "redis://127.0.0.1:6379/0")
QUEUE = "raw"

app = Celery("raw", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue=QUEUE,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)


@app.task(name="raw.inpaint")
def inpaint(image_b64: str, mask_b64: str, radius: int = 5) -> str:
    image = Image.open(io.BytesIO(base64.b64decode(image_b64))).convert("RGB")
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(mask_b64))).convert("L")) > 127
    bgr = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)
    result = cv2.inpaint(bgr, mask.astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)
    buffer = io.BytesIO()
    Image.fromarray(cv2.cvtColor(result, cv2.COLOR_BGR2RGB)).save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode()
