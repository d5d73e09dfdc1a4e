"""A tiny stand-in for big-lama.pt: same TorchScript I/O, deterministic, a few kB.

``forward(image 1×3×H×W 0..1, mask 1×1×H×W 0/1) -> 1×3×H×W 0..1``, refusing H or W that are
not multiples of 8 as the real export would misbehave. It fills the hole with the average of the
known pixels nearby (the mean of all known pixels where none is near) and, unlike the real model,
also blurs everything outside the hole, so a runner that pastes more than the masked pixels is
caught. ``seen`` records the (H, W) of the last input, to check what the crop strategy fed it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class TinyLama(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(2, dtype=torch.int64))

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        torch._assert(image.shape[2] % 8 == 0 and image.shape[3] % 8 == 0, "H and W must be multiples of 8")
        torch._assert(mask.shape[1] == 1, "mask must be 1×1×H×W")
        self.seen[0] = image.shape[2]
        self.seen[1] = image.shape[3]
        known = 1.0 - mask
        total = F.avg_pool2d(image * known, 15, stride=1, padding=7)
        weight = F.avg_pool2d(known, 15, stride=1, padding=7)
        overall = (image * known).sum(dim=(2, 3), keepdim=True) / known.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)
        local = total / weight.clamp_min(1e-6)
        return torch.where(weight > 1e-6, local, overall.expand_as(image)).clamp(0.0, 1.0)


def build_tiny_lama(path: Path) -> Path:
    """Script TinyLama and save it at ``path`` (atomically, as a worker may be looking)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with warnings.catch_warnings():  # big-lama.pt is TorchScript, so its stand-in must be too
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(TinyLama()), str(partial))
    partial.replace(path)
    return path
