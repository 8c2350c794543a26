"""Batch-wise training augmentation on uint8 tensors, on whatever device they live on.

One affine warp per image (random resized crop, horizontal flip, small rotation)
through ``affine_grid``/``grid_sample``, then brightness and contrast jitter. Doing it
on the batch, on the training device, keeps the data pipeline far faster than the
model, including on a GPU where the cached dataset stays resident as uint8.
Left-right flips are anatomically plausible for axial brain slices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    scale: tuple[float, float] = (0.8, 1.0)  # area fraction kept by the random crop
    ratio: tuple[float, float] = (0.9, 1.1)  # aspect ratio range of the crop
    flip: float = 0.5  # probability of a horizontal flip
    degrees: float = 10.0  # rotation range, +-
    brightness: float = 0.1  # additive shift range, +-, on [0, 1] intensities
    contrast: float = 0.1  # multiplicative range around the image mean, +-

    def __call__(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` -> augmented float in [0, 1]."""
        x = pixels.float() / 255.0
        b = x.shape[0]
        dev = x.device

        def u(lo: float, hi: float) -> torch.Tensor:
            return torch.rand(b, generator=generator).to(dev) * (hi - lo) + lo

        area = u(*self.scale)
        logr = u(math.log(self.ratio[0]), math.log(self.ratio[1]))
        sx = torch.sqrt(area * torch.exp(logr)).clamp(max=1.0)
        sy = torch.sqrt(area / torch.exp(logr)).clamp(max=1.0)
        tx = (1 - sx) * u(-1, 1)
        ty = (1 - sy) * u(-1, 1)
        angle = u(-self.degrees, self.degrees) * math.pi / 180
        flip = torch.where(u(0, 1) < self.flip, -1.0, 1.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [torch.stack([sx * cos * flip, -sy * sin, tx], 1), torch.stack([sx * sin * flip, sy * cos, ty], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * u(1 - self.contrast, 1 + self.contrast).view(b, 1, 1, 1) + mean
        x = x + u(-self.brightness, self.brightness).view(b, 1, 1, 1)
        return x.clamp(0, 1)
