"""What object removal's engines share (IOPaint's ``InpaintModel.__call__``): the mask, grown by
``dilate``, then each engine's own fill."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
from PIL import Image

from pipelines.base import Engine, JobInput, JobOutput, Progress


def mask_array(mask: Image.Image) -> np.ndarray:
    """A boolean array, True where the mask is white (alpha counts as transparent = keep)."""
    if mask.mode in ("RGBA", "LA"):
        gray = np.asarray(mask.convert("LA"))
        return (gray[..., 0] > 127) & (gray[..., 1] > 127)
    return np.asarray(mask if mask.mode == "L" else mask.convert("L")) > 127


def removal_mask(job: JobInput) -> np.ndarray:
    """The job's mask as a boolean array, grown by ``parameters.dilate`` pixels."""
    mask = mask_array(job.images["mask"])
    dilate: int = job.parameters.dilate
    if dilate:
        import cv2

        kernel = np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8)
        mask = cv2.dilate(mask.astype(np.uint8), kernel) > 0
    return mask


def rgb_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))  # convert() copies even then


class InpaintEngine(Engine):
    """An object removal engine: fills the True area of the job's (dilated) mask."""

    def run(self, job: JobInput, progress: Progress) -> JobOutput:
        return self.inpaint(job, removal_mask(job), progress)

    @abstractmethod
    def inpaint(self, job: JobInput, mask: np.ndarray, progress: Progress) -> JobOutput:
        """Fill ``mask`` (H×W bool) of ``job.images["image"]``; everything else stays as it was."""
