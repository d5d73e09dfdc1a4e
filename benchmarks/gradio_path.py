"""The gradio_client path against Gradio's own floor, side by side in one run.

    .venv/bin/python benchmarks/gradio_path.py [--n 100]        (make bench runs it)

Starts Atelier's stack (as benchmarks/run.py does: embedded Redis, a gpu and a cpu worker, the web
app) and, in a process of its own served the same way (uvicorn with Gradio mounted on FastAPI),
an echo app: Gradio's floor, a function that hands back the image it was given. Then one client
per app calls them in turn (interleaved: the machine's load drifts within seconds), 64×64 images:

- echo: one image uploaded, queued, handed back over the event stream, downloaded: the floor of any
  Gradio image app (a plain function);
- streamed echo: the floor of ``/object_removal``'s contract, Atelier's work left out: two images
  uploaded (a photo and a mask), a generator that streams an id first, then the photo back;
- Atelier's ``/object_removal`` (engine telea), the photo as an image-editor value and a mask.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.run import interleaved, photo_job, small_job, stack, stats, table  # noqa: E402


async def streamed_echo(path: str, mask: str) -> AsyncIterator[tuple[str | None, str, str]]:
    """What ``/object_removal`` streams, without the job: an id and a message first, then the image."""
    yield None, "00000000-0000-4000-8000-000000000000", "Submitted"
    yield path, "00000000-0000-4000-8000-000000000000", "Done"


def echo_app() -> Any:
    """Gradio's floors: an image in, the same image out; and the streamed echo of two images."""
    import gradio as gr
    from fastapi import FastAPI

    with gr.Blocks() as demo:
        image = gr.Image(type="filepath", image_mode=None)
        mask = gr.Image(type="filepath", image_mode=None)
        out = gr.Image(type="filepath", format="png")
        texts = [gr.Textbox(), gr.Textbox()]
        gr.Button().click(lambda path: path, image, out, api_name="echo", concurrency_limit=None)
        gr.Button().click(streamed_echo, [image, mask], [out, *texts], api_name="streamed_echo", concurrency_limit=None)
    demo.queue(default_concurrency_limit=None)
    return gr.mount_gradio_app(FastAPI(), demo, path="/")


def serve_echo(port: int) -> None:
    import uvicorn

    uvicorn.run(echo_app(), host="127.0.0.1", port=port, log_level="warning", proxy_headers=False)


@contextmanager
def echo_server() -> Iterator[str]:
    from app import free_port

    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve-echo", str(port)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/config").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("the echo app did not start")
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)


def measure(atelier_url: str, echo_url: str, image: bytes, mask: bytes, n: int) -> dict[str, list[float]]:
    from gradio_client import Client, handle_file

    with tempfile.TemporaryDirectory() as tmp:
        suffix = ".jpg" if image[:2] == b"\xff\xd8" else ".png"
        (Path(tmp) / f"photo{suffix}").write_bytes(image)
        (Path(tmp) / "mask.png").write_bytes(mask)
        photo, stencil = handle_file(f"{tmp}/photo{suffix}"), handle_file(f"{tmp}/mask.png")
        echo, atelier = Client(echo_url, verbose=False), Client(atelier_url, verbose=False)
        editor = {"background": photo, "layers": [], "composite": None}
        calls = {
            "Gradio echo (one image)": lambda: echo.predict(photo, api_name="/echo"),
            "Gradio streamed echo (photo + mask, id first)": lambda: echo.predict(
                photo, stencil, api_name="/streamed_echo"
            ),
            "Atelier /object_removal (telea)": lambda: atelier.predict(
                editor, stencil, "telea", 0, api_name="/object_removal"
            ),
        }
        interleaved(calls, 5)  # warm-up: connections, caches, the worker's pool
        return interleaved(calls, n)


def report(title: str, samples: dict[str, list[float]]) -> None:
    echo, streamed = (statistics.median(samples[name]) for name in list(samples)[:2])
    table(
        title,
        ["path", "median ms", "p99 ms", "× echo", "× streamed echo"],
        [
            [name, *stats(s), statistics.median(s) / echo, statistics.median(s) / streamed]
            for name, s in samples.items()
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100, help="calls per row")
    parser.add_argument("--serve-echo", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        serve_echo(args.serve_echo)
        return
    print(f"Atelier gradio_client benchmark — {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
          f"Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M')}")  # fmt: skip
    with stack() as (atelier_url, redis_url, _app), echo_server() as echo_url:
        os.environ["REDIS_URL"] = redis_url
        samples = measure(atelier_url, echo_url, *small_job(), args.n)
        report(f"1. gradio_client round trip, 64×64 PNG and mask ({args.n} calls each, interleaved)", samples)
        width, height = 2048, 1365
        samples = measure(atelier_url, echo_url, *photo_job(width, height), max(10, args.n // 5))
        report(f"2. The same with a {width}×{height} JPEG photo ({max(10, args.n // 5)} calls each)", samples)


if __name__ == "__main__":
    threading.current_thread().name = "benchmark"
    main()
