"""Files and paths: an upload's filename never becomes a path, and Gradio serves nothing outside its cache."""

from __future__ import annotations

import http.client
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest
from PIL import Image, ImageDraw

from tests.conftest import png_bytes
from tests.integration.conftest import Api

ROOT = Path(__file__).resolve().parents[2]


def tiny_pair() -> tuple[bytes, bytes]:
    image = Image.new("RGB", (16, 16), (200, 60, 20))
    mask = Image.new("L", (16, 16), 0)
    ImageDraw.Draw(mask).rectangle((5, 5, 10, 10), fill=255)
    return png_bytes(image), png_bytes(mask)


def landed(filename: str, name: str) -> list[Path]:
    """Where ``filename``, taken as a path, would have put a file, and the folders the app writes to."""
    bases = [Path.cwd(), ROOT, Path(tempfile.gettempdir()), Path(os.environ["ATELIER_DATA_DIR"])]
    bases += [Path(os.environ["ATELIER_MODELS_DIR"]), Path(tempfile.gettempdir()) / "gradio"]
    spellings = {filename, filename.replace("\\", "/"), unquote(filename)}
    candidates = [(base / spelling).resolve() for base in bases for spelling in spellings]
    candidates += [Path("/tmp") / f"{name}.png", Path("/etc") / f"{name}.png", Path("/") / f"{name}.png"]
    found = [path for path in candidates if path.exists()]
    for folder in bases[3:]:  # the app's own folders, searched through
        found += list(folder.rglob(f"*{name}*")) if folder.is_dir() else []
    return found


@pytest.mark.parametrize(
    "filename",
    ["../../{}.png", "/tmp/{}.png", "..\\..\\{}.png", "%2e%2e%2f%2e%2e%2f{}.png", "data/../../{}.png"],
)
def test_an_upload_filename_never_becomes_a_path(api: Api, filename: str) -> None:
    name = f"atelier-escape-{uuid.uuid4().hex}"
    image, mask = tiny_pair()
    response = api.http.post(
        "/api/v1/tasks/submit/",
        data={"task_type": "object_removal", "parameters": '{"engine": "telea"}'},
        files={"image": (filename.format(name), image, "image/png"), "mask": (f"/etc/{name}.png", mask, "image/png")},
    )
    assert response.status_code == 202, response.text
    assert api.wait(response.json()["task_id"])["status"] == "SUCCESS"  # the bytes were used, the name was not
    assert landed(filename.format(name), name) == []


def get_raw(base: str, target: str) -> tuple[int, bytes]:
    """GET with the request target exactly as given (httpx would normalise the dot segments away)."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_gradio_serves_no_file_outside_its_cache(live_server: str) -> None:
    import httpx

    from ui.common import RESULTS

    cache = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()
    RESULTS.mkdir(exist_ok=True)
    probe = RESULTS / f"probe-{uuid.uuid4().hex}.png"  # a result not handed to Gradio: not servable either
    probe.write_bytes(png_bytes(Image.new("RGB", (4, 4))))
    secrets = ["/etc/passwd", "/proc/self/environ", str(ROOT / "settings.py"), str(probe)]
    targets: list[str] = []
    for secret in secrets:
        targets += [f"/gradio_api/file={secret}", f"/file={secret}", f"/gradio_api/file={quote(secret, safe='')}"]
    targets += [
        "/gradio_api/file=../../../../../../../../etc/passwd",
        "/gradio_api/file=..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/gradio_api/file=%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        f"/gradio_api/file={cache}/../../../../../etc/passwd",
        f"/gradio_api/file={cache}/..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        f"/gradio_api/file={RESULTS}/../../../../etc/passwd",
        "/gradio_api/file=settings.py",
        "/gradio_api/file=./.env",
        "/gradio_api/file=~/.bashrc",
        "/gradio_api/file=//etc/passwd",
        "/gradio_api/file=\\etc\\passwd",
        "/gradio_api/file=/etc/passwd%00.png",
        "/static/../../../../etc/passwd",
        "/assets/../../../../etc/passwd",
    ]
    served = {}
    for target in targets:
        status, body = get_raw(live_server, target)
        if status not in (400, 403, 404) or b"root:" in body or b"REDIS_URL" in body:
            served[target] = (status, body[:80])
    assert served == {}, served

    # The route works: a file uploaded through Gradio, hence in its cache, is served.
    uploaded = httpx.post(
        f"{live_server}/gradio_api/upload", files={"files": ("ok.png", png_bytes(Image.new("RGB", (4, 4))))}
    )
    (path,) = uploaded.json()
    assert Path(path).resolve().is_relative_to(cache)
    assert get_raw(live_server, f"/gradio_api/file={path}")[0] == 200


def test_result_download_names_carry_no_path(api: Api, workers: Any) -> None:
    """The job id is the only name a result gets, and ids that look like paths are plain 404s."""
    for task_id in ("../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "/etc/passwd", "%00"):
        response = api.http.get(f"/api/v1/tasks/{quote(task_id, safe='')}/result/?format=png")
        assert response.status_code == 404
        assert b"root:" not in response.content


def test_the_page_takes_no_upload_over_the_size_limit(live_server: str) -> None:
    """ATELIER_MAX_UPLOAD_MB bounds Gradio's own upload route too, not only REST: no one fills the disk."""
    import httpx

    from settings import get_settings

    too_big = b"\0" * (get_settings().max_upload_bytes + 1024)
    response = httpx.post(f"{live_server}/gradio_api/upload", files={"files": ("big.png", too_big)}, timeout=60)
    assert response.status_code == 413, response.text[:200]
