"""Per-engine time for background removal (rembg) and face swap (insightface) at three image sizes.

    .venv/bin/python benchmarks/engines.py [--repeat 3] [--quick]

Builds the tests' tiny ONNX models into a temp models folder (no download, no network), so this
measures what our code and the libraries add around the network (resizing, composing, alignment,
pasting back), not a real model's inference. The first run of each engine also
loads it; that time is shown apart. Shared machines are noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SIZES = [(512, 512), (1024, 1024), (4096, 2160)]


def picture(size: tuple[int, int]) -> Any:
    """A dark photo-sized picture with a light subject, for background removal."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, (30, 35, 40))
    width, height = size
    ImageDraw.Draw(image).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(230, 200, 170))
    return image


def two_faces(size: tuple[int, int]) -> Any:
    # Side and position are multiples of 16 and 8 pixels once the detector scales the image to 640.
    from tests.support.tiny_onnx import draw_faces

    unit = size[0] // 8
    return draw_faces(size, [(unit, unit, 2 * unit), (5 * unit, unit, 2 * unit)])


def timed(run: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """(first run, median of the next ``repeat`` runs, last output)."""
    started = time.perf_counter()
    output = run()
    first = time.perf_counter() - started
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        output = run()
        times.append(time.perf_counter() - started)
    return first, statistics.median(times), output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs after the first (default 3)")
    parser.add_argument("--quick", action="store_true", help="one timed run, and skip 4096×2160")
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    sizes = SIZES[:2] if args.quick else SIZES

    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as models:
        os.environ["ATELIER_MODELS_DIR"] = models  # before settings are first read
        os.environ.pop("U2NET_HOME", None)
        from pipelines.background_removal import BackgroundRemovalParameters, rembg_home, remove_background
        from pipelines.base import JobInput, no_progress
        from pipelines.face_swap import FaceSwapParameters, insightface_root, swap_faces
        from settings import get_settings
        from tests.support.tiny_onnx import build_insightface_models, build_rembg_models

        settings = get_settings()
        started = time.perf_counter()
        build_rembg_models(rembg_home(settings), ("u2net",))
        build_insightface_models(insightface_root(settings))
        print(f"tiny models built in {time.perf_counter() - started:.1f} s into {models}\n")

        rows = []
        for size in sizes:
            image = picture(size)
            job = JobInput(
                images={"image": image}, parameters=BackgroundRemovalParameters(model="u2net"), settings=settings
            )
            first, median, output = timed(partial(remove_background, job, no_progress), repeat)
            rows.append(("background_removal (u2net)", size, first, median, f"{output.image.mode}"))
        source = two_faces((512, 512))
        for size in sizes:
            target = two_faces(size)
            job = JobInput(
                images={"image": source, "target_image": target}, parameters=FaceSwapParameters(), settings=settings
            )
            first, median, output = timed(partial(swap_faces, job, no_progress), repeat)
            found = f"{output.metadata['faces_swapped']}/{output.metadata['faces_found']} faces"
            rows.append(("face_swap (all faces)", size, first, median, found))

    header = f"{'engine':<28} {'input':>10} {'first run s':>12} {'median s':>9}  result"
    print(header)
    print("-" * len(header))
    for engine, (width, height), first, median, note in rows:
        print(f"{engine:<28} {f'{width}×{height}':>10} {first:>12.3f} {median:>9.3f}  {note}")
    print(f"\n(first run includes loading the model in this process; median of {repeat} runs after it)")


if __name__ == "__main__":
    main()
