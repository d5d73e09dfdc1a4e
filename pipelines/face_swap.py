"""Swap faces with insightface: a detector + recognizer pack (buffalo_l) and the inswapper model.

Layout under ATELIER_MODELS_DIR/insightface: ``models/<pack>/*.onnx`` (what FaceAnalysis reads,
unpacked from ``<pack>.zip`` of insightface's releases on first use or by ``python app.py
download-models``) and ``inswapper_128.onnx``, which insightface no longer distributes: it is put
there by hand, or fetched from ATELIER_MODEL_MIRROR when one is set. Both are licensed for
non-commercial research only.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image
from pydantic import Field

from pipelines.base import (
    Engine,
    JobInput,
    JobOutput,
    ModelUnavailable,
    Operation,
    Parameters,
    PipelineError,
    Progress,
    Stopwatch,
    engine_map,
)
from pipelines.downloads import FileModel, Model, Source, ZipModel
from pipelines.images import with_alpha_of
from pipelines.models import cache_key, load_counts, load_once, onnx_device, onnx_providers
from settings import Settings

log = logging.getLogger(__name__)

# The files FaceAnalysis needs from a known pack (detector, recognizer); other packs: any *.onnx.
PACK_FILES = {"buffalo_l": ("det_10g.onnx", "w600k_r50.onnx"), "buffalo_s": ("det_500m.onnx", "w600k_mbf.onnx")}
PACK_RELEASE = "https://github.com/deepinsight/insightface/releases/download/v0.7"  # <pack>.zip, no checksum
PACK_SIZES = {"buffalo_l": 288_600_000, "buffalo_s": 159_000_000}  # bytes of the zips, approximate
SWAPPER_SIZE = 554_000_000
INSIGHTFACE_LICENSE = "non-commercial research only (insightface)"
SWAPPER_SOURCE = "https://huggingface.co/ezioruan/inswapper_128.onnx (one of its Hugging Face mirrors)"
DETECTION_SIZE = (640, 640)


class FaceSwapParameters(Parameters):
    face_index: int | None = Field(
        default=None, ge=0, description="Which target face to replace (0 = leftmost); unset: all faces"
    )


def insightface_root(settings: Settings) -> Path:
    return settings.models_dir / "insightface"


def missing_pack_files(root: Path, pack: str) -> list[Path]:
    pack_dir = root / "models" / pack
    if pack in PACK_FILES:
        return [pack_dir / name for name in PACK_FILES[pack] if not (pack_dir / name).is_file()]
    return [] if any(pack_dir.glob("*.onnx")) else [pack_dir / "*.onnx"]


def missing_files(root: Path, pack: str, swapper: str) -> list[Path]:
    """The model files face swap needs that are not under ``root`` (checked before insightface runs,
    which would otherwise try to download the pack and fail slowly offline)."""
    missing = missing_pack_files(root, pack)
    if not (root / swapper).is_file():
        missing.append(root / swapper)
    return missing


def require_models(root: Path, pack: str, swapper: str) -> None:
    missing = missing_files(root, pack, swapper)
    if not missing:
        return
    advice = []
    if missing_pack_files(root, pack):
        advice.append(f"the {pack} pack: run `python app.py download-models {pack}`")
    if root / swapper in missing:
        advice.append(
            f"{swapper}: insightface no longer distributes it; get it from {SWAPPER_SOURCE} and put it at "
            f"{root / swapper} (or serve it from ATELIER_MODEL_MIRROR as <mirror>/insightface/{swapper})"
        )
    raise ModelUnavailable(
        f"Face swap needs model files that are missing: {', '.join(str(path) for path in missing)}. "
        f"To get them: {'; '.join(advice)}."
    )


@contextlib.contextmanager
def _quiet() -> Any:
    # insightface prints every model it finds; keep that out of the worker's log unless debugging.
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    if buffer.getvalue():
        log.debug("insightface: %s", buffer.getvalue().strip())


def analysis_key(settings: Settings) -> str:
    """The ``load_once`` key (and ``load_counts`` entry) of the detector pack ``settings`` select."""
    return cache_key("face_swap/analysis", insightface_root(settings), settings.face_analysis_pack, settings.device)


def swapper_key(settings: Settings) -> str:
    """The ``load_once`` key (and ``load_counts`` entry) of the swapper ``settings`` select."""
    return cache_key("face_swap/inswapper", insightface_root(settings) / settings.face_swap_model, settings.device)


def load_analysis(settings: Settings) -> Any:
    root = insightface_root(settings)
    require_models(root, settings.face_analysis_pack, settings.face_swap_model)
    from insightface.app import FaceAnalysis

    providers = onnx_providers(settings)
    with _quiet():
        analysis = FaceAnalysis(
            name=settings.face_analysis_pack,
            root=str(root),
            allowed_modules=["detection", "recognition"],  # landmarks, age and gender are not needed
            providers=providers,
        )
        analysis.prepare(ctx_id=0 if "CUDAExecutionProvider" in providers else -1, det_size=DETECTION_SIZE)
    return analysis


def load_swapper(settings: Settings) -> Any:
    root = insightface_root(settings)
    require_models(root, settings.face_analysis_pack, settings.face_swap_model)
    from insightface.model_zoo import get_model

    with _quiet():
        swapper = get_model(str(root / settings.face_swap_model), providers=onnx_providers(settings))
    if swapper is None or type(swapper).__name__ != "INSwapper":
        raise ModelUnavailable(
            f"{root / settings.face_swap_model} is not an inswapper model (insightface routed it elsewhere)"
        )
    return swapper


def _area(face: Any) -> float:
    x1, y1, x2, y2 = face.bbox[:4]
    return float((x2 - x1) * (y2 - y1))


def _box(face: Any) -> list[int]:
    return [round(float(value)) for value in face.bbox[:4]]


def _faces(word: str, count: int) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _bgr(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def find_faces(
    analysis: Any, source_bgr: np.ndarray, target_bgr: np.ndarray, progress: Progress
) -> tuple[Any, list[Any]]:
    """The largest face of the source, and every face of the target from left to right."""
    progress(0.1, "Finding the source face")
    source_faces = analysis.get(source_bgr)
    if not source_faces:
        raise PipelineError("No face found in the source image")
    progress(0.25, "Finding the faces in the target image")
    target_faces = sorted(analysis.get(target_bgr), key=lambda face: float(face.bbox[0]))  # left to right
    if not target_faces:
        raise PipelineError("No face found in the target image")
    return max(source_faces, key=_area), target_faces


def chosen_faces(target_faces: list[Any], face_index: int | None) -> list[Any]:
    if face_index is None:
        return target_faces
    if face_index >= len(target_faces):
        count = len(target_faces)
        raise PipelineError(
            f"face_index {face_index} but the target image has "
            f"{_faces('face', count)} ({'0' if count == 1 else f'0-{count - 1}'})"
        )
    return [target_faces[face_index]]


def swap_faces(job: JobInput, progress: Progress) -> JobOutput:
    """Put the largest face of ``image`` onto the faces of ``target_image`` (all, or ``face_index``)."""
    params: FaceSwapParameters = job.parameters
    settings = job.settings
    progress(0.02, "Loading face models")
    watch = Stopwatch()
    key = analysis_key(settings)
    analysis = load_once(key, lambda: load_analysis(settings))
    swapper = load_once(swapper_key(settings), lambda: load_swapper(settings))
    watch.lap("load")

    target_image = job.images["target_image"]
    target_bgr = _bgr(target_image)
    source, target_faces = find_faces(analysis, _bgr(job.images["image"]), target_bgr, progress)
    chosen = chosen_faces(target_faces, params.face_index)
    watch.lap("detect")

    result = target_bgr.copy()
    for number, face in enumerate(chosen, start=1):
        progress(0.3 + 0.65 * (number - 1) / len(chosen), f"Swapping face {number}/{len(chosen)}")
        swap_one(swapper, result, face, source)
    output = with_alpha_of(target_image, Image.fromarray(np.ascontiguousarray(result[:, :, ::-1])))
    progress(1.0, f"Swapped {_faces('face', len(chosen))}")
    return JobOutput(
        image=output,
        metadata={
            "engine": "insightface",
            "model": settings.face_swap_model,
            "pack": settings.face_analysis_pack,
            "faces_found": len(target_faces),
            "faces_swapped": len(chosen),
            "face_index": params.face_index,
            "source_face": _box(source),
            "target_faces": [_box(face) for face in target_faces],
            "device": onnx_device(settings),
            "model_loads_in_process": load_counts[key],
            "timings": watch.lap("swap"),
        },
    )


def swap_one(swapper: Any, image: np.ndarray, face: Any, source: Any) -> None:
    """Swap one face of ``image`` (BGR) in place, working on the face's neighbourhood only.

    INSwapper's paste-back warps, erodes and blurs full-frame masks: about a second per face on a
    4096×2160 photo. The blended area lies inside the aligned 128×128 crop, about 1.2 face boxes
    wide, so a crop with one box side of margin all round gives the same pixels, far faster.
    """
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (float(value) for value in face.bbox[:4])
    margin = max(x2 - x1, y2 - y1)
    left, top = max(int(x1 - margin), 0), max(int(y1 - margin), 0)
    right, bottom = min(int(x2 + margin) + 1, width), min(int(y2 + margin) + 1, height)
    local = SimpleNamespace(kps=face.kps - np.array([left, top], dtype=face.kps.dtype))  # all get() reads
    patch = np.ascontiguousarray(image[top:bottom, left:right])
    image[top:bottom, left:right] = swapper.get(patch, local, source, paste_back=True)


@dataclass(frozen=True, kw_only=True)
class PackModel(ZipModel):
    """insightface's detector + recognizer pack, unpacked into ``models/<pack>/``."""

    def target(self, settings: Settings) -> Path:
        return insightface_root(settings) / "models" / self.name

    def location(self, settings: Settings) -> Path | None:
        folder = self.target(settings)
        return None if missing_pack_files(insightface_root(settings), self.name) else folder

    def loaded_key(self, settings: Settings) -> str | None:
        return analysis_key(settings)


@dataclass(frozen=True, kw_only=True)
class SwapperModel(FileModel):
    """The inswapper model: no public source, so ``manual`` unless ATELIER_MODEL_MIRROR serves it."""

    def target(self, settings: Settings) -> Path:
        return insightface_root(settings) / settings.face_swap_model

    def loaded_key(self, settings: Settings) -> str | None:
        return swapper_key(settings)


def face_models(settings: Settings) -> list[Model]:
    pack, swapper = settings.face_analysis_pack, settings.face_swap_model
    return [
        PackModel(
            name=pack,
            license=INSIGHTFACE_LICENSE,
            size=PACK_SIZES.get(pack),
            default=True,
            source=Source("insightface", f"{pack}.zip", f"{PACK_RELEASE}/{pack}.zip"),
        ),
        SwapperModel(
            name=Path(swapper).stem,
            license=INSIGHTFACE_LICENSE,
            size=SWAPPER_SIZE if swapper == "inswapper_128.onnx" else None,
            default=True,
            source=Source("insightface", swapper, None),
            hint=f"get it from {SWAPPER_SOURCE}",
        ),
    ]


class InsightFaceEngine(Engine):
    """insightface's detector + recognizer pack and the inswapper model."""

    name = "insightface"
    library = "insightface"

    def is_ready(self, settings: Settings) -> bool:
        return not missing_files(insightface_root(settings), settings.face_analysis_pack, settings.face_swap_model)

    def models(self, settings: Settings) -> list[Model]:
        return face_models(settings)

    def run(self, job: JobInput, progress: Progress) -> JobOutput:
        return swap_faces(job, progress)


OPERATION = Operation(
    name="face_swap",
    queue="gpu",
    title="Face swap",
    parameters=FaceSwapParameters,
    engines=engine_map(InsightFaceEngine()),
    required_images=("image", "target_image"),
)
