"""LaMa inpainting: the TorchScript ``big-lama.pt`` IOPaint ships, run with IOPaint's crop strategy.

The network takes ``image`` (1×3×H×W, RGB 0..1) and ``mask`` (1×1×H×W, 1 = fill) with H and W
multiples of 8 and returns the filled image (1×3×H×W, 0..1). On a large photo it sees only a crop
around each group of masked regions plus a margin of context (IOPaint's HDStrategy.CROP), scaled
down when even that crop is longer than ``lama_resize_limit`` (HDStrategy.RESIZE); only the masked
pixels are pasted back, so everything else stays byte for byte the original.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipelines.base import JobInput, JobOutput, ModelUnavailable, PipelineError, Progress, Stopwatch, no_progress
from pipelines.downloads import FileModel, Model, Source
from pipelines.images import with_alpha_of
from pipelines.inpainting import InpaintEngine, rgb_array
from pipelines.models import cache_key, load_counts, load_once, torch_device
from settings import Settings

LAMA_FILE = "lama/big-lama.pt"
LAMA_URL = "https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt"
LAMA_MD5 = "e3aa4aaa15225a33ec84f9f4bc47e500"  # IOPaint's checksum of that release file
LAMA_SIZE = 205_700_000  # bytes, approximate
PAD_MODULO = 8
# IOPaint's defaults: photos longer than CROP_TRIGGER px are inpainted crop by crop, each crop
# being a mask region's bounding box grown by CROP_MARGIN px of context on every side.
CROP_MARGIN = 128
CROP_TRIGGER = 800
# Past this many separate regions (a speckled mask), one bounding crop beats merging boxes pairwise.
MAX_REGIONS = 64

Box = tuple[int, int, int, int]  # x0, y0, x1, y1; x1 and y1 exclusive


@dataclass(frozen=True)
class LamaModel:
    module: Any  # torch.jit.ScriptModule
    device: str
    path: Path
    cache_key: str

    @property
    def loads_in_process(self) -> int:
        return load_counts[self.cache_key]


@dataclass(frozen=True)
class LamaResult:
    image: np.ndarray  # H×W×3 uint8, the original outside the mask
    crops: list[Box]  # the regions LaMa worked on, in image coordinates
    model_sizes: list[tuple[int, int]]  # (width, height) each crop had when LaMa saw it, before padding


def lama_path(settings: Settings) -> Path:
    return settings.lama_model or settings.models_dir / LAMA_FILE


def lama_key(settings: Settings) -> str:
    """The ``load_once`` key (and ``load_counts`` entry) of the LaMa model ``settings`` select."""
    return cache_key("object_removal/lama", lama_path(settings), settings.device)


def how_to_get(path: Path) -> str:
    return (
        f"download big-lama.pt from {LAMA_URL} (or run `python app.py download-models big-lama`) "
        f"and put it at {path}, or use engine 'telea'"
    )


def _summary(exc: BaseException) -> str:
    """The gist of torch's long messages: the first sentence, or a TorchScript traceback's last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    line = lines[-1] if lines[0].startswith("The following operation failed") else lines[0]
    return line.split(". ")[0][:200]


def load_lama(path: Path, key: str, settings: Settings) -> LamaModel:
    import torch

    device = torch_device(settings)
    try:
        with warnings.catch_warnings():
            # big-lama.pt ships only as TorchScript: torch deprecates this loader, it still reads the file.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except Exception as exc:  # torch raises RuntimeError, ValueError or zip errors for a bad file
        raise ModelUnavailable(
            f"The LaMa weights at {path} could not be loaded ({_summary(exc)}): the file looks corrupt or "
            f"incomplete. Delete it and {how_to_get(path)}."
        ) from None
    return LamaModel(module.to(device).eval(), device, path, key)


def get_lama(settings: Settings) -> LamaModel:
    """The LaMa model of this worker process, loaded on first use; fails fast when the file is absent."""
    path = lama_path(settings)
    if not path.is_file():
        raise ModelUnavailable(f"The LaMa engine needs its weights at {path}: {how_to_get(path)}.")
    key = lama_key(settings)
    return load_once(key, lambda: load_lama(path, key, settings))


def run_lama(model: LamaModel, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One forward pass: pad to a multiple of 8 (mirroring the edge, as IOPaint does), run, crop back."""
    import torch

    height, width = mask.shape
    pad = ((0, -height % PAD_MODULO), (0, -width % PAD_MODULO))
    image = torch.from_numpy(np.pad(rgb, (*pad, (0, 0)), mode="symmetric")).permute(2, 0, 1)[None]
    hole = torch.from_numpy(np.pad(mask, pad, mode="symmetric"))[None, None]
    image = image.to(model.device, torch.float32).div_(255)
    hole = hole.to(model.device, torch.float32)
    try:
        with torch.inference_mode():
            out = model.module(image, hole)
    except Exception as exc:
        raise PipelineError(
            f"The model at {model.path} failed on a {width}×{height} input ({_summary(exc)}); it must be a LaMa "
            f"export taking (image, mask) and returning the image, such as big-lama.pt from {LAMA_URL}"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(image.shape):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PipelineError(f"The model at {model.path} returned {shape} for an input of {tuple(image.shape)}")
    filled = out[0, :, :height, :width].clamp(0, 1).mul(255).round().to(torch.uint8)
    result: np.ndarray = filled.permute(1, 2, 0).cpu().numpy()
    return result


def inpaint_crop(
    model: LamaModel, rgb: np.ndarray, mask: np.ndarray, resize_limit: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """Fill one crop, scaled down first when its long side exceeds ``resize_limit``; returns (fill, seen size)."""
    import cv2

    height, width = mask.shape
    scale = resize_limit / max(height, width)
    if scale >= 1:
        return run_lama(model, rgb, mask), (width, height)
    size = (max(round(width * scale), 1), max(round(height * scale), 1))
    small_rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    # A float mask under INTER_AREA is > 0 wherever any masked pixel fell, so no hole pixel is lost.
    small_mask = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
    filled = run_lama(model, small_rgb, small_mask)
    return cv2.resize(filled, (width, height), interpolation=cv2.INTER_CUBIC), size


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def bounding_box(boxes: list[Box]) -> Box:
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


def crop_boxes(mask: np.ndarray, margin: int = CROP_MARGIN) -> list[Box]:
    """One crop per group of mask regions: each region's box grown by ``margin``, clamped to the image.

    Unlike IOPaint, which crops each contour on its own, crops that overlap are merged: then every
    masked pixel lies in exactly one crop and each crop is filled from untouched photo pixels, so the
    order of the crops cannot matter, while distant regions still pay only for their own surroundings.
    """
    import cv2

    height, width = mask.shape
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    grown = [
        (max(x - margin, 0), max(y - margin, 0), min(x + w + margin, width), min(y + h + margin, height))
        for x, y, w, h, _ in stats[1:].tolist()
    ]
    if len(grown) > MAX_REGIONS:
        grown = [bounding_box(grown)]
    merged = True
    while merged:
        merged = False
        boxes: list[Box] = []
        for box in grown:
            for index, other in enumerate(boxes):
                if _overlap(box, other):
                    boxes[index], merged = bounding_box([box, other]), True
                    break
            else:
                boxes.append(box)
        grown = boxes
    return sorted(grown, key=lambda box: (box[1], box[0]))


def inpaint_lama(
    model: LamaModel,
    rgb: np.ndarray,
    mask: np.ndarray,
    progress: Progress = no_progress,
    *,
    resize_limit: int,
    crop_trigger: int = CROP_TRIGGER,
    margin: int = CROP_MARGIN,
) -> LamaResult:
    """Fill ``mask`` (H×W bool) of ``rgb`` (H×W×3 uint8); pixels outside the mask come back unchanged.

    A crop longer than ``resize_limit`` (``settings.lama_resize_limit``) is scaled down for the network."""
    height, width = mask.shape
    crops = [(0, 0, width, height)] if max(height, width) <= crop_trigger else crop_boxes(mask, margin)
    fills: list[np.ndarray] = []
    sizes: list[tuple[int, int]] = []
    for index, (x0, y0, x1, y1) in enumerate(crops):
        where = f"region {index + 1} of {len(crops)}, " if len(crops) > 1 else ""
        progress(0.2 + 0.7 * index / len(crops), f"Inpainting with LaMa ({where}{x1 - x0}×{y1 - y0} px)")
        fill, seen = inpaint_crop(model, rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1], resize_limit)
        fills.append(fill)
        sizes.append(seen)
    progress(0.92, "Pasting the filled pixels into the photo")
    result = rgb.copy()
    for (x0, y0, x1, y1), fill in zip(crops, fills, strict=True):
        hole = mask[y0:y1, x0:x1]
        result[y0:y1, x0:x1][hole] = fill[hole]
    return LamaResult(result, crops, sizes)


@dataclass(frozen=True, kw_only=True)
class LamaWeights(FileModel):
    """big-lama.pt, at ATELIER_LAMA_MODEL or models_dir/lama/big-lama.pt."""

    def target(self, settings: Settings) -> Path:
        return lama_path(settings)

    def location(self, settings: Settings) -> Path | None:
        path = lama_path(settings)
        return path if path.is_file() else None

    def loaded_key(self, settings: Settings) -> str | None:
        return lama_key(settings)


LAMA_WEIGHTS = LamaWeights(
    name="big-lama",
    license="Apache-2.0",
    size=LAMA_SIZE,
    default=True,
    source=Source("lama", "big-lama.pt", LAMA_URL, md5=LAMA_MD5),
)


class LamaEngine(InpaintEngine):
    """LaMa on ``big-lama.pt``: object removal's default engine wherever its weights are."""

    name = "lama"
    library = "torch"

    def is_ready(self, settings: Settings) -> bool:
        return lama_path(settings).is_file()

    def models(self, settings: Settings) -> list[Model]:
        return [LAMA_WEIGHTS]

    def inpaint(self, job: JobInput, mask: np.ndarray, progress: Progress) -> JobOutput:
        image = job.images["image"]
        progress(0.05, "Loading LaMa")
        watch = Stopwatch()
        model = get_lama(job.settings)
        watch.lap("load")
        filled = inpaint_lama(model, rgb_array(image), mask, progress, resize_limit=job.settings.lama_resize_limit)
        result = with_alpha_of(image, Image.fromarray(filled.image))
        progress(1.0, "Object removed")
        return JobOutput(
            image=result,
            metadata={
                "engine": self.name,
                "device": model.device,
                "masked_pixels": int(mask.sum()),
                # The area LaMa worked on (the union of its crops); pixels outside it are never touched.
                "crop": list(bounding_box(filled.crops)),
                "crops": [list(box) for box in filled.crops],
                "model_input_sizes": [list(size) for size in filled.model_sizes],
                "model_loads_in_process": model.loads_in_process,
                "timings": watch.lap("run"),
            },
        )
