"""Shared fixtures. A real redis-server starts when this file is imported, before any test
module or nested conftest imports the app, so the process-wide settings (and ``tasks.app``)
point at it."""

from __future__ import annotations

import base64
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from tests.support.stack import RedisServer, Worker, serving

IMAGES = Path(__file__).parent / "images"
_tmp = tempfile.TemporaryDirectory(prefix="atelier-tests-")
os.environ["ATELIER_DATA_DIR"] = str(Path(_tmp.name) / "data")
os.environ["ATELIER_MODELS_DIR"] = str(Path(_tmp.name) / "models")  # tiny models are built in here
os.environ.pop("U2NET_HOME", None)  # rembg's weights then live in the temp models dir, never a real one
# The tiny random diffusers pipeline the generation tests build (tests/support/tiny_diffusion.py).
os.environ["ATELIER_GENERATION_MODEL"] = str(Path(_tmp.name) / "models" / "tiny-sd")
_redis = RedisServer(Path(_tmp.name) / "redis")
os.environ["REDIS_URL"] = _redis.url


def pytest_unconfigure(config: pytest.Config) -> None:
    _redis.stop()
    _tmp.cleanup()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _redis.url


@pytest.fixture(scope="session")
def redis_client(redis_url: str):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(redis_url)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(__file__).parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def workers(redis_client, artifacts) -> Iterator[dict[str, Worker]]:  # type: ignore[no-untyped-def]
    """One real worker per queue for the whole session."""
    started = {
        queue: Worker(queue, f"session-{queue}", log=artifacts / f"worker-{queue}.log") for queue in ("cpu", "gpu")
    }
    try:
        for worker in started.values():
            worker.wait_ready(redis_client)
        yield started
    finally:
        for worker in started.values():
            worker.stop()


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def b64(image: Image.Image, fmt: str = "PNG") -> str:
    return base64.b64encode(png_bytes(image, fmt)).decode()


@pytest.fixture(scope="session")
def photo() -> Image.Image:
    """A real photo (scikit-image's coffee, 600×400)."""
    return Image.open(IMAGES / "coffee.jpg").convert("RGB")


@pytest.fixture(scope="session")
def engines() -> Path:
    """Tiny models for the engines that need weights, where the session's workers look for them:
    the diffusers pipeline, rembg's u2net, insightface's pack and swapper. (No LaMa: telea stays
    the default engine for object_removal; tests/integration/test_engines_lama.py has its own.)"""
    from pipelines.background_removal import rembg_home
    from pipelines.face_swap import insightface_root
    from tests.support.tiny_diffusion import build_tiny_pipeline
    from tests.support.tiny_onnx import build_insightface_models, build_rembg_models

    build_tiny_pipeline(Path(os.environ["ATELIER_GENERATION_MODEL"]))
    build_rembg_models(rembg_home(), ("u2net",))
    build_insightface_models(insightface_root())
    return Path(os.environ["ATELIER_MODELS_DIR"])


@pytest.fixture(scope="session")
def faces(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A source and a target picture (PNG files) with faces the tiny insightface models find."""
    from tests.support.tiny_onnx import draw_faces

    folder = tmp_path_factory.mktemp("faces")
    source, target = folder / "source.png", folder / "target.png"
    draw_faces((320, 240), [(120, 60, 96)], colours=[(236, 178, 140)]).save(source)
    draw_faces((640, 480), [(40, 64, 64), (336, 80, 128), (176, 240, 96)]).save(target)
    return source, target


@pytest.fixture(scope="session")
def mask(photo: Image.Image) -> Image.Image:
    mask = Image.new("L", photo.size, 0)
    ImageDraw.Draw(mask).ellipse((220, 120, 300, 200), fill=255)
    return mask


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def live_server(workers: dict[str, Worker]) -> Iterator[str]:
    from app import build_app

    with serving(build_app()) as url:
        yield url


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
