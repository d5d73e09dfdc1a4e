"""Object removal engines side by side: OpenCV Telea and LaMa (the tiny test model), and what the crop
strategy saves on a big photo.

    .venv/bin/python benchmarks/inpainting.py [--repeat 3]

The tiny LaMa has big-lama.pt's I/O but a few kB of weights, so its column measures the runner
(padding, crops, resizing, pasting, torch overhead), not the real network: with big-lama.pt the
network dominates and the crop strategy saves more. Times are medians; compare within one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PHOTO = ROOT / "tests" / "images" / "coffee.jpg"


def median_time(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def photo(width: int, height: int) -> np.ndarray:
    return np.asarray(Image.open(PHOTO).convert("RGB").resize((width, height), Image.Resampling.BICUBIC))


def ellipse_mask(width: int, height: int) -> np.ndarray:
    """A centred ellipse a sixth of the photo across: an object of proportional size."""
    mask = Image.new("L", (width, height), 0)
    cx, cy, rx, ry = width // 2, height // 2, width // 12, height // 12
    ImageDraw.Draw(mask).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
    return np.asarray(mask) > 127


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from pipelines.lama import CROP_TRIGGER, get_lama, inpaint_lama
    from pipelines.object_removal import inpaint_telea
    from settings import get_settings
    from tests.support.tiny_lama import build_tiny_lama

    with tempfile.TemporaryDirectory() as folder:
        settings = get_settings().model_copy(update={"lama_model": build_tiny_lama(Path(folder) / "big-lama.pt")})
        limit = settings.lama_resize_limit
        started = time.perf_counter()
        model = get_lama(settings)
        print(f"tiny LaMa loaded in {time.perf_counter() - started:.2f} s on {model.device}")
        print(f"defaults: crop when the long side > {CROP_TRIGGER} px, resize limit {limit}")
        inpaint_lama(model, photo(64, 64), ellipse_mask(64, 64), resize_limit=limit)  # warm-up

        print("\n## Engines (median of", args.repeat, "runs; mask: centred ellipse, 1/6 of the photo across)")
        print(f"| {'size':>10} | {'masked px':>9} | {'telea s':>8} | {'tiny-lama s':>11} | lama crop (x0,y0,x1,y1) |")
        print(f"|{'-' * 12}|{'-' * 11}|{'-' * 10}|{'-' * 13}|{'-' * 25}|")
        for width, height in ((512, 512), (1024, 1024), (4096, 2160)):
            rgb, mask = photo(width, height), ellipse_mask(width, height)
            image = Image.fromarray(rgb)
            telea = median_time(lambda: inpaint_telea(image, mask, 5), args.repeat)  # noqa: B023
            lama = median_time(lambda: inpaint_lama(model, rgb, mask, resize_limit=limit), args.repeat)  # noqa: B023
            crop = inpaint_lama(model, rgb, mask, resize_limit=limit).crops
            boxes = ", ".join(str(list(box)) for box in crop)
            size = f"{width}×{height}"
            print(f"| {size:>10} | {int(mask.sum()):>9} | {telea:>8.3f} | {lama:>11.3f} | {boxes:<23} |")

        print("\n## Crop strategy: a 64×64 mask in a 4096×2160 photo, tiny LaMa")
        rgb = photo(4096, 2160)
        mask = np.zeros((2160, 4096), bool)
        mask[1500:1564, 3000:3064] = True
        runs = {
            "full image, native size": {"crop_trigger": 10**6, "resize_limit": 10**6},
            "full image, resized to 2048": {"crop_trigger": 10**6, "resize_limit": 2048},
            "crop (default)": {"resize_limit": limit},
        }
        times: dict[str, float] = {}
        print(f"| {'strategy':<28} | {'model input':>11} | {'time s':>7} | {'vs crop':>7} |")
        print(f"|{'-' * 30}|{'-' * 13}|{'-' * 9}|{'-' * 9}|")
        for name, options in runs.items():
            times[name] = median_time(lambda: inpaint_lama(model, rgb, mask, **options), args.repeat)  # noqa: B023
        for name, options in runs.items():
            width, height = inpaint_lama(model, rgb, mask, **options).model_sizes[0]
            ratio = times[name] / times["crop (default)"]
            print(f"| {name:<28} | {f'{width}×{height}':>11} | {times[name]:>7.3f} | {ratio:>6.1f}× |")


if __name__ == "__main__":
    main()
