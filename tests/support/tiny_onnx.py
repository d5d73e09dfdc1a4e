"""Tiny ONNX models in the layouts rembg and insightface load, built on the fly for tests and benchmarks.

They are real ONNX files that go through the libraries' own loading code (rembg's sessions,
insightface's model_zoo routing), but they compute simple, predictable functions instead of
learned ones, so tests can assert what the output must be:

- background (u2net / isnet layout): foreground = bright pixels (mean RGB above half of the image's
  maximum), so a light shape on a dark background gives alpha 255 on the shape and 0 elsewhere.
- face detector (SCRFD layout, 9 outputs, strides 8/16/32, 2 anchors): a "face" is a square of
  FACE_RGB (±TOLERANCE per channel) whose corner and side are multiples of 8 and 16 pixels in the
  detector's 640×640 input; each is found with its exact box and five landmarks placed where
  ArcFace's template expects eyes, nose and mouth. Real photos (insightface's t1.jpg with its six
  faces) need the real buffalo_l pack; these models test our code path, not face detection.
- recognizer (ArcFace layout, 112×112 → 512): the embedding is a fixed linear map of the crop's
  mean colour, so differently coloured faces have different identities.
- swapper (inswapper layout, target 1×3×128×128 + source 1×512, ``emap`` as the last initializer):
  paints the crop towards a colour that is a fixed function of the source identity.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

FACE_RGB = (224, 172, 132)
TOLERANCE = 16  # per channel, 0-255
DETECTOR_SIZE = 640
MAX_HALF_CELLS = 24  # the largest face the tiny detector measures: 2 × 24 cells of 8 px = 384 px (in its input)
# ArcFace's five landmarks in its 112×112 crop (insightface.utils.face_align.arcface_dst).
ARCFACE_LANDMARKS = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)


def _export(
    module: Any, args: tuple[Any, ...], path: Path, inputs: list[str], outputs: list[str], **kwargs: Any
) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module.eval(), args, str(path), dynamo=False, input_names=inputs, output_names=outputs, **kwargs
        )
    return path


def build_background_model(path: Path) -> Path:
    """A u2net-shaped model (any input size; output 1×1×H×W) whose mask is 'brighter than half the maximum'."""
    import torch

    class Brightness(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> torch.Tensor:
            # rembg divides by the image's maximum then normalizes with ImageNet's mean/std (u2net)
            # or 0.5/1.0 (isnet); undo the std part roughly: the sign of the centred value is what counts.
            brightness = image.mean(dim=1, keepdim=True)
            return torch.sigmoid(60.0 * brightness)

    torch.manual_seed(0)
    return _export(
        Brightness(),
        (torch.zeros(1, 3, 320, 320),),
        path,
        ["input.1"],
        ["mask"],
        dynamic_axes={"input.1": {2: "height", 3: "width"}, "mask": {2: "height", 3: "width"}},
    )


def build_face_detector(path: Path) -> Path:
    """An SCRFD-shaped detector (static 640×640 input, 9 outputs) that finds FACE_RGB squares."""
    import torch
    import torch.nn.functional as F

    cells = DETECTOR_SIZE // 8
    template = torch.tensor(ARCFACE_LANDMARKS, dtype=torch.float32)
    # Landmark offsets from the box centre as a fraction of the box side.
    landmark_fractions = ((template - 56.0) / 112.0).reshape(1, 10, 1)

    class TinyDetector(torch.nn.Module):
        def forward(self, blob: torch.Tensor) -> tuple[torch.Tensor, ...]:
            rgb = blob * 128.0 + 127.5  # insightface feeds (pixel - 127.5) / 128, RGB
            target = torch.tensor(FACE_RGB, dtype=torch.float32).reshape(1, 3, 1, 1)
            close = torch.sigmoid(2.0 * (TOLERANCE - (rgb - target).abs())).prod(dim=1, keepdim=True)
            skin = F.avg_pool2d(close, 8)  # 1×1×80×80: the skin fraction of each 8×8 cell
            # Side of the largest square window (centred on each anchor, i.e. on a cell corner)
            # that is all skin, in pixels: 16 per fitting window size. Window sums come from an
            # integral image, so each of the MAX_HALF_CELLS sizes costs a few slices.
            padded = F.pad(skin, (MAX_HALF_CELLS, MAX_HALF_CELLS, MAX_HALF_CELLS, MAX_HALF_CELLS))
            integral = F.pad(padded.cumsum(dim=2).cumsum(dim=3), (1, 0, 1, 0))
            side = torch.zeros_like(skin)
            for half in range(1, MAX_HALF_CELLS + 1):
                low, high = MAX_HALF_CELLS - half, MAX_HALF_CELLS + half
                total = (
                    integral[..., high : high + cells, high : high + cells]
                    - integral[..., low : low + cells, high : high + cells]
                    - integral[..., high : high + cells, low : low + cells]
                    + integral[..., low : low + cells, low : low + cells]
                )
                filled = total / (2 * half) ** 2
                side = side + 16.0 * torch.sigmoid(200.0 * (filled - 0.96))
            # A face is where the side peaks (a square's centre); its neighbours fit 16 px less.
            peak = F.max_pool2d(side, 5, stride=1, padding=2)
            score = torch.sigmoid(2.0 * (side - peak + 8.0)) * torch.sigmoid(2.0 * (side - 8.0))

            # Outputs are per anchor: each place twice (insightface's 2 anchors), the second never scores.
            def per_anchor(values: torch.Tensor, width: int) -> torch.Tensor:
                return torch.stack([values, values * 0], dim=1).reshape(-1, width)

            scores = [per_anchor(score.reshape(-1, 1), 1)]
            boxes = [per_anchor((side.reshape(-1, 1) / 2.0 / 8.0).repeat(1, 4), 4)]  # distances / stride
            kps = [per_anchor((landmark_fractions * side.reshape(1, 1, -1)).reshape(10, -1).t() / 8.0, 10)]
            for stride in (16, 32):  # the coarser levels find nothing (but still depend on the input)
                empty = F.avg_pool2d(skin, stride // 8).reshape(-1, 1) * 0
                scores.append(per_anchor(empty, 1))
                boxes.append(per_anchor(empty.repeat(1, 4), 4))
                kps.append(per_anchor(empty.repeat(1, 10), 10))
            return (*scores, *boxes, *kps)

    names = [f"{kind}_{stride}" for kind in ("score", "bbox", "kps") for stride in (8, 16, 32)]
    return _export(TinyDetector(), (torch.zeros(1, 3, DETECTOR_SIZE, DETECTOR_SIZE),), path, ["input.1"], names)


def build_face_recognizer(path: Path) -> Path:
    """An ArcFace-shaped recognizer (1×3×112×112 → 1×512): a fixed linear map of the mean colour."""
    import torch

    class TinyRecognizer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(1)
            self.identity = torch.nn.Parameter(torch.randn(3, 512, generator=generator), requires_grad=False)

        def forward(self, face: torch.Tensor) -> torch.Tensor:
            return face.mean(dim=(2, 3)) @ self.identity

    return _export(TinyRecognizer(), (torch.zeros(1, 3, 112, 112),), path, ["data"], ["fc1"])


def build_face_swapper(path: Path) -> Path:
    """An inswapper-shaped model: the target crop blended towards a colour chosen by the source identity."""
    import onnx
    import torch
    from onnx import numpy_helper

    class TinySwapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(2)
            self.colour = torch.nn.Parameter(torch.randn(512, 3, generator=generator) * 4.0, requires_grad=False)

        def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
            colour = torch.sigmoid(source @ self.colour).reshape(1, 3, 1, 1)
            return 0.3 * target + 0.7 * colour

    _export(TinySwapper(), (torch.zeros(1, 3, 128, 128), torch.zeros(1, 512)), path, ["target", "source"], ["output"])
    # INSwapper reads the identity projection ("emap") from the graph's last initializer.
    model = onnx.load(str(path))
    emap = np.linalg.qr(np.random.default_rng(3).standard_normal((512, 512)))[0].astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(emap, name="emap"))
    onnx.save(model, str(path))
    return path


def build_rembg_models(home: Path, models: tuple[str, ...] = ("u2net", "isnet-general-use")) -> Path:
    """The tiny background model under rembg's home, as ``<home>/<model>.onnx`` (the flat layout rembg reads)."""
    for model in models:
        target = home / f"{model}.onnx"
        if not target.exists():
            build_background_model(target)
    return home


def build_insightface_models(root: Path, pack: str = "buffalo_l", swapper: str = "inswapper_128.onnx") -> Path:
    """The tiny detector + recognizer as ``<root>/models/<pack>/`` (buffalo_l's file names) and the swapper."""
    pack_dir = root / "models" / pack
    if not (pack_dir / "det_10g.onnx").exists():
        build_face_detector(pack_dir / "det_10g.onnx")
    if not (pack_dir / "w600k_r50.onnx").exists():
        build_face_recognizer(pack_dir / "w600k_r50.onnx")
    if not (root / swapper).exists():
        build_face_swapper(root / swapper)
    return root


def draw_faces(
    size: tuple[int, int],
    boxes: list[tuple[int, int, int]],
    background: tuple[int, int, int] = (40, 60, 90),
    colours: list[tuple[int, int, int]] | None = None,
) -> Any:
    """An RGB picture with face squares at ``(left, top, side)``, FACE_RGB unless ``colours`` says
    otherwise (within TOLERANCE of it, they are still faces, with another identity)."""
    from PIL import Image

    pixels = np.empty((size[1], size[0], 3), dtype=np.uint8)
    pixels[:] = background
    for index, (left, top, side) in enumerate(boxes):
        pixels[top : top + side, left : left + side] = colours[index] if colours else FACE_RGB
    return Image.fromarray(pixels)
