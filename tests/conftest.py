"""Shared fixtures. Importing this file starts nothing: the session's redis-server starts on the
first use of ``redis_url`` (which ``redis_client``, ``workers`` and ``live_server`` depend on), so
``pytest -m "not slow"`` runs without Redis. Tests that need it are marked ``slow`` here."""

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
# Downloads on first use (ATELIER_AUTO_DOWNLOAD is on) go to a loopback port where nothing listens,
# so tests never touch the network; tests/support/mirror.py serves tiny models where a test wants them.
os.environ["ATELIER_MODEL_MIRROR"] = "http://127.0.0.1:9"
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
# The tiny random diffusers pipeline the generation tests build (tests/support/tiny_diffusion.py).
os.environ["ATELIER_GENERATION_MODEL"] = str(Path(_tmp.name) / "models" / "tiny-sd")
# Never the developer's own Redis: the session's server sets REDIS_URL when it starts.
os.environ.pop("REDIS_URL", None)
os.environ.pop("ATELIER_REDIS_URL", None)
_redis: RedisServer | None = None  # started by the redis_url fixture, stopped in pytest_unconfigure

# Tests under these folders, and tests that use these fixtures (directly or through another
# fixture), need Redis, Celery workers or a browser: they are marked slow.
SLOW_FOLDERS = ("integration", "e2e", "reliability")
SLOW_FIXTURES = {"redis_url", "redis_client", "workers", "live_server", "browser"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        path = Path(item.path)
        folder = path.relative_to(root).parts[0] if path.is_relative_to(root) else ""
        if folder in SLOW_FOLDERS or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _redis is not None:
        _redis.stop()
    _tmp.cleanup()


def _forget_process_wide_state() -> None:
    """Drop the cached settings, Celery app and job client: what is built next reads REDIS_URL anew."""
    import jobs
    import settings
    import tasks

    settings.get_settings.cache_clear()
    tasks.get_app.cache_clear()
    jobs.get_client.cache_clear()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The session's real redis-server, started on first use; ``REDIS_URL`` and the process-wide
    settings, ``tasks.app`` and job client point at it from then on."""
    global _redis
    if _redis is None:
        _redis = RedisServer(Path(_tmp.name) / "redis")
        os.environ["REDIS_URL"] = _redis.url
        _forget_process_wide_state()
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
    from settings import get_settings
    from tests.support.tiny_diffusion import build_tiny_pipeline
    from tests.support.tiny_onnx import build_insightface_models, build_rembg_models

    build_tiny_pipeline(Path(os.environ["ATELIER_GENERATION_MODEL"]))
    build_rembg_models(rembg_home(get_settings()), ("u2net",))
    build_insightface_models(insightface_root(get_settings()))
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
